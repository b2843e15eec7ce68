"""Pure math used across syco: no Lightning, no model loading, only tensors in and tensors out."""
