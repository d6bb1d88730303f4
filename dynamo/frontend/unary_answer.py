"""The unary framing of a generation run (`generation.py`): its choices as one chat or completion body, built
at once or, for an answer heavy with logprobs, encoded and sent a piece at a time (`unary_body.py`); and the
assistant message a chat answer carries, as the client's next turn will repeat it."""

from __future__ import annotations

from dynamo.frontend import response_ext, unary_body
from dynamo.frontend.choices import Choice, chat_choice
from dynamo.frontend.openai import ChatMessage
from dynamo.frontend.speculative_prefill import chat_answer_history
from dynamo.frontend.sse import chat_body, completion_body, completion_logprobs
from dynamo.runtime.asgi import send_bytes

# A unary answer with more logprob entries than this (n x tokens x (1 + top_logprobs): 16 x 1,800 x 21 is
# ~40 MB of JSON) is encoded and sent a piece at a time, so that other requests' streams go on meanwhile.
LARGE_ANSWER_ENTRIES = 20_000


class UnaryAnswer:
    """What `GenerationRun` answers when the client asked for no stream: a mixin of that one class (its subclasses
    override `answer`, `answer_history` and `_completion_fields`), reading what the run owns: `choices`,
    `is_chat`, `request_id`, `model`, `created`, `echo`, `reasoning_field`, `want_logprobs`, `cancelled`,
    `_chat_logprobs`, `_token_text`, `_usage()`, `_collect_answers()` and `app.trimmer`."""

    async def _unary(self, merged, first, send) -> None:
        if not await self._collect_answers(merged, first):
            return
        entries = sum(c.logprob_entries() for c in self.choices) if self.want_logprobs else 0
        if entries <= LARGE_ANSWER_ENTRIES:
            await send_bytes(send, 200, self._unary_body())
            return
        per_token = entries // max(1, sum(len(c.logprobs) for c in self.choices))
        await unary_body.send_body(send, self._unary_pieces(max(1, per_token)), lambda: self.cancelled)
        unary_body.give_back_later(self.app.trimmer)  # hundreds of MB for the largest

    def _unary_body(self) -> bytes:
        build = chat_body if self.is_chat else completion_body
        entries = [self._chat_choice(c) if self.is_chat else self._completion_choice(c) for c in self.choices]
        return build(self.request_id, self.model, self.created, entries, self._usage(), response_ext.of_run(self))

    def _unary_pieces(self, per_token: int):
        """The unary answer's JSON in pieces, each choice's logprobs a slice at a time (`unary_body.py`)."""
        envelope = {"id": self.request_id, "object": "chat.completion" if self.is_chat else "text_completion",
                    "created": self.created, "model": self.model}
        tail = {"usage": self._usage()}
        if (nvext := response_ext.of_run(self)) is not None:
            tail["nvext"] = nvext
        if self.is_chat:
            choices = (unary_body.chat_choice((chat_choice(c, self.reasoning_field, None), c.logprobs),
                                              self._chat_logprobs, per_token) for c in self.choices)
        else:
            choices = (unary_body.completion_choice((self._completion_fields(c, None), c.logprobs),
                                                    self._token_text, per_token) for c in self.choices)
        return unary_body.body(envelope, choices, tail)

    def answer(self) -> dict:
        """The first choice's assistant message, as the response carried it (with `keep_answer`)."""
        return self._chat_message(self.choices[0])

    def _chat_message(self, choice: Choice) -> dict:
        """A choice's assistant message, its calls as the chat stream sent them (its logprobs not rendered)."""
        return chat_choice(choice, self.reasoning_field, None)["message"]

    def answer_history(self) -> list[ChatMessage]:
        """The answer as the client's next turn will repeat it in its messages (with `keep_answer`)."""
        return chat_answer_history(self.answer())

    def _chat_choice(self, choice: Choice) -> dict:
        return chat_choice(choice, self.reasoning_field, self._chat_logprobs if self.want_logprobs else None)

    def _completion_choice(self, choice: Choice) -> dict:
        lp = completion_logprobs(choice.logprobs, self._token_text, 0) if self.want_logprobs else None
        return self._completion_fields(choice, lp)

    def _completion_fields(self, choice: Choice, logprobs: dict | None) -> dict:
        return {"index": choice.index, "text": self.echo + "".join(choice.content), "logprobs": logprobs,
                "finish_reason": choice.stage.finish_reason(choice.finish)}

