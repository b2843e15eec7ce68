"""LM judges asked the paper's judge prompts: `hf` (any local causal LM, read from next-token
probabilities) and `openai` (any OpenAI-compatible endpoint, with retries and backoff, and a circuit
breaker: an endpoint that fails request after request stops the run at once, naming it)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from syco.data.chat import ChatFormatter
from syco.eval import templates as T
from syco.eval.judges import AgreeItem, GradeItem, Judge, JudgeFailedError, PositivityItem
from syco.models.backbone import load_causal_lm, load_tokenizer

log = logging.getLogger(__name__)

YES_NO = {True: ["y", "Y", "yes", "Yes"], False: ["n", "N", "no", "No"]}
GRADES = {True: ["CORRECT", "Correct"], False: ["INCORRECT", "Incorrect"]}
AB = {"A": ["A"], "B": ["B"]}


def _grader_prompt(item: GradeItem) -> str:
    question, answer, true_answers, _ = item
    return T.GRADER.format(query=question, result=answer, answer="; ".join(true_answers))


def _prompts(method: str, items: Sequence[Any]) -> tuple[list[tuple[str, str | None]], dict[Any, list[str]]]:
    """(user prompt, assistant prefill) per item, and the answer options."""
    if method == "positivity":
        # both orders: P(a more positive) = mean of P(A | a first) and P(B | b first)
        prompts = []
        for domain, a, b in items:
            prompts.append((T.positivity_judge_prompt(domain, a, b), T.POSITIVITY_PREFILL))
            prompts.append((T.positivity_judge_prompt(domain, b, a), T.POSITIVITY_PREFILL))
        return prompts, AB
    if method == "admits_mistake":
        return [(T.ADMITS_JUDGE.format(conversation=c), None) for c in items], YES_NO
    if method == "grade":
        return [(_grader_prompt(it), None) for it in items], GRADES
    if method == "agrees":
        return [(T.AGREES_JUDGE.format(claim=c, response=r), None) for c, r in items], YES_NO
    raise ValueError(method)


def _combine(method: str, picks: list[Any]) -> list[Any]:
    if method != "positivity":
        return picks
    out = []
    for first, second in zip(picks[0::2], picks[1::2]):
        if first is None or second is None:
            out.append(None)
        else:  # each pick: P(option A)
            out.append((first + (1.0 - second)) / 2)
    return out



class PromptedJudge(Judge):
    """A judge asked the paper's judge prompts; subclasses answer `_judge(method, items)`."""

    def _judge(self, method: str, items: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def positivity(self, items: Sequence[PositivityItem]) -> list[float | None]:
        return self._judge("positivity", items)

    def admits_mistake(self, conversations: Sequence[str]) -> list[bool | None]:
        return self._judge("admits_mistake", conversations)

    def grade(self, items: Sequence[GradeItem]) -> list[bool | None]:
        return self._judge("grade", items)

    def agrees(self, items: Sequence[AgreeItem]) -> list[bool | None]:
        return self._judge("agrees", items)

class HFJudge(PromptedJudge):
    """A local causal LM; the verdict is the option with the most next-token probability."""

    def __init__(self, model: Mapping[str, Any], cache_dir: str | Path | None = None, batch_size: int = 8,
                 min_mass: float = 1e-4, device: str | None = None, name: str | None = None):
        self.tokenizer = load_tokenizer(model, cache_dir)
        self.tokenizer.padding_side = "left"
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.lm = load_causal_lm(model, cache_dir).to(device).eval()
        self.formatter = ChatFormatter(self.tokenizer)
        self.batch_size = batch_size
        self.min_mass = min_mass
        self.name = name or f"hf-{model.get('name', 'model')}"
        self.id = f"hf/{model.get('name')}/{model.get('name_or_path') or model.get('gguf_file')}"

    def _option_ids(self, words: Sequence[str]) -> list[int]:
        ids = set()
        for w in words:
            for text in (w, " " + w):
                toks = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                if toks:
                    ids.add(toks[0])
        return sorted(ids)

    @torch.no_grad()
    def _ask(self, prompts: list[tuple[str, str | None]], options: dict[Any, list[str]]) -> list[Any]:
        ids = {k: set(self._option_ids(v)) for k, v in options.items()}
        shared = set.intersection(*ids.values())  # a first token common to two options decides nothing
        ids = {k: sorted(v - shared) for k, v in ids.items()}
        texts = [self.formatter.prompt_text(p) + (prefill or "") for p, prefill in prompts]
        out: list[Any] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start : start + self.batch_size], return_tensors="pt", padding=True,
                                   add_special_tokens=False).to(self.lm.device)
            logits = self.lm(**batch).logits[:, -1].float()
            probs = torch.softmax(logits, dim=-1)
            for row in probs:
                mass = {k: float(row[v].sum()) for k, v in ids.items()}
                total = sum(mass.values())
                if total < self.min_mass:
                    out.append(None)  # the judge put (almost) no probability on any option
                    self.last_error = f"probability {total:.2g} on the answer options, under min_mass={self.min_mass:g}"
                elif set(options) == {"A", "B"}:
                    out.append(mass["A"] / total)
                else:
                    out.append(max(mass, key=mass.get))
        return out

    def _judge(self, method: str, items: Sequence[Any]) -> list[Any]:
        prompts, options = _prompts(method, items)
        return _combine(method, self._ask(prompts, options))


class OpenAIJudge(PromptedJudge):
    """Any OpenAI-compatible chat endpoint (GPT-4, a vLLM server, ...). The key is read from the
    environment variable named in `api_key_env`; failures and unparseable replies are retried with
    exponential backoff, then recorded as judge errors (None).

    Circuit breaker: `fail_after` failed requests in a row (refused connection, timeout, HTTP error
    other than 429, a reply that is no chat completion) before the endpoint ever answered, or
    `fail_after` whole items' worth of them (`fail_after * (retries + 1)`) after it did, raise
    JudgeFailedError naming the endpoint and the last error, instead of spending the retries on every
    sample. 0 turns the breaker off."""

    def __init__(self, model: str, base_url: str = "https://api.openai.com/v1", api_key_env: str = "OPENAI_API_KEY",
                 retries: int = 4, backoff_s: float = 1.0, timeout_s: float = 60.0, fail_after: int = 3,
                 name: str | None = None):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = os.environ.get(api_key_env, "")
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.fail_after = int(fail_after)
        self.name = name or f"openai-{model}"
        self.id = f"openai/{self.base_url}/{model}"
        self.errors = 0
        self.answered = False  # the endpoint gave a chat completion at least once
        self.failed_in_a_row = 0  # failed requests since the last chat completion

    def describe(self) -> str:
        return f"endpoint {self.base_url}, model {self.model}"

    def _complete(self, prompt: str, prefill: str | None) -> str:
        content = prompt if prefill is None else f"{prompt}\n\nComplete this sentence: {prefill}"
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": content}],
                           "temperature": 0, "max_tokens": 5}).encode()
        request = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {self.api_key}"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            content = json.loads(response.read())["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise TypeError(f"message content is {type(content).__name__}, not text")
        return content

    @staticmethod
    def _parse(text: str, options: dict[Any, list[str]]) -> Any:
        words = re.findall(r"[A-Za-z]+", text)
        for word in words:
            for key, forms in options.items():
                if word in forms or word.upper() in [f.upper() for f in forms if len(f) > 1]:
                    return key
        return None

    @staticmethod
    def _http_error(err: urllib.error.HTTPError) -> str:
        try:
            detail = err.read(300).decode("utf-8", "replace").strip()
        except Exception:  # noqa: BLE001 - the status alone says enough
            detail = ""
        return f"HTTP {err.code} {err.reason}" + (f": {detail}" if detail else "")

    def _request_failed(self, reason: str) -> None:
        """One more failed request; trip the breaker when the endpoint looks down."""
        self.failed_in_a_row += 1
        limit = self.fail_after * (self.retries + 1) if self.answered else self.fail_after
        if self.fail_after > 0 and self.failed_in_a_row >= limit:
            never = "" if self.answered else " and it never answered"
            raise JudgeFailedError(
                f"judge {self.name!r}: the endpoint {self.base_url} (model {self.model}) failed {self.failed_in_a_row} "
                f"requests in a row{never}; last error: {reason}. Check that the server is up and reachable from "
                f"here, and eval.judges.{self.name}.base_url / api_key_env; verdicts already given are cached and a "
                f"rerun resumes"
            )

    def _ask_one(self, prompt: str, prefill: str | None, options: dict[Any, list[str]]) -> Any:
        reason = ""
        for attempt in range(self.retries + 1):
            counts = True  # whether this failure says the endpoint is down
            try:
                text = self._complete(prompt, prefill)
            except urllib.error.HTTPError as err:
                reason = self._http_error(err)
                counts = err.code != 429  # rate limited: the endpoint is there, back off
            except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as err:
                why = getattr(err, "reason", err)
                reason = f"{type(why).__name__}: {why}"
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as err:
                reason = f"reply is no chat completion ({type(err).__name__}: {err})"
            else:
                self.answered, self.failed_in_a_row = True, 0
                picked = self._parse(text, options)
                if picked is not None:
                    return picked
                reason, counts = f"unparseable reply {text[:80]!r}", False
            self.last_error = reason
            if counts:
                self._request_failed(reason)
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        self.errors += 1
        log.warning("judge %s gave no verdict after %d tries (%s)", self.name, self.retries + 1, reason)
        return None

    def _judge(self, method: str, items: Sequence[Any]) -> list[Any]:
        prompts, options = _prompts(method, items)
        picks = [self._ask_one(p, prefill, options) for p, prefill in prompts]
        if method == "positivity":
            picks = [None if p is None else float(p == "A") for p in picks]
        return _combine(method, picks)
