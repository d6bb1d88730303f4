"""Scripted output for tests (`--replay-file`): the mocker emits a chosen text so the
frontend's parsers can be exercised end to end through the real HTTP path.

The file is a JSON object mapping a prompt substring to the output text. A request
whose decoded prompt contains a key gets that text's token ids (one token per step,
so markers split across tokens just as with a real model), then EOS. Longest keys are
tried first; a request matching no key is sampled as usual.
"""

from __future__ import annotations

import json
from pathlib import Path

from dynamo.llm.tokenizer import Tokenizer


class Replay:
    def __init__(self, scripts: dict[str, str], tokenizer: Tokenizer) -> None:
        if not isinstance(scripts, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in scripts.items()):
            raise ValueError("replay file must be a JSON object of string -> string")
        if not all(scripts.values()):
            raise ValueError("replay texts must be non-empty")
        self._tokenizer = tokenizer
        self._scripts = [(key, tokenizer.encode(text, add_special_tokens=False))
                         for key, text in sorted(scripts.items(), key=lambda kv: -len(kv[0]))]

    @classmethod
    def from_file(cls, path: str, tokenizer: Tokenizer) -> "Replay":
        return cls(json.loads(Path(path).read_text(encoding="utf-8")), tokenizer)

    def script_for(self, prompt_ids: list[int]) -> list[int] | None:
        prompt = self._tokenizer.decode(prompt_ids, skip_special_tokens=False)
        for key, ids in self._scripts:
            if key in prompt:
                return list(ids)
        return None
