"""Render prompts and responses with a model's chat template, as token ids.

A prompt is a list of chat messages rendered with the generation prompt; a response is the
assistant's text followed by the template's end-of-turn marker. Prompt and response are tokenized
separately so that one prompt's ids can be shared by many responses (shared-prefix packing) and
so that a response scores the same whichever prompt batch it came in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

Message = dict[str, str]
Prompt = str | Sequence[Message]

_SENTINEL = "\u2063SYCO-RESPONSE\u2063"


def as_messages(prompt: Prompt) -> list[Message]:
    """A plain string prompt is one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


class ChatFormatter:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, prefix: Sequence[Message] | None = None):
        if not tokenizer.chat_template:
            raise ValueError(
                f"tokenizer {tokenizer.name_or_path!r} has no chat template; set model.chat_template in the config"
            )
        self.tokenizer = tokenizer
        self.prefix = as_messages(prefix) if prefix else []
        self.end_of_turn = self._end_of_turn_marker()

    def _end_of_turn_marker(self) -> str:
        """What the template writes after an assistant message's content (e.g. `<|im_end|>`)."""
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}]
        text = self.tokenizer.apply_chat_template(probe, tokenize=False)
        if _SENTINEL in text:
            # trailing newlines after the marker are template layout, not part of the turn
            marker = text.split(_SENTINEL, 1)[1].rstrip()
            if marker:
                return marker
        return self.tokenizer.eos_token or ""

    def prompt_text(self, prompt: Prompt) -> str:
        messages = as_messages(prompt)
        # a scoring prefix goes after any system message, where a user turn may stand
        n_system = 1 if messages and messages[0]["role"] == "system" else 0
        messages = messages[:n_system] + self.prefix + messages[n_system:]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        return self.tokenizer(self.prompt_text(prompt), add_special_tokens=False)["input_ids"]

    def response_ids(self, response: str) -> list[int]:
        return self.tokenizer(response + self.end_of_turn, add_special_tokens=False)["input_ids"]

    def responses_ids(self, responses: Sequence[str]) -> list[list[int]]:
        if not responses:
            return []
        return self.tokenizer([r + self.end_of_turn for r in responses], add_special_tokens=False)["input_ids"]

    def describe(self) -> dict[str, Any]:
        return {"end_of_turn": self.end_of_turn, "prefix": self.prefix}
