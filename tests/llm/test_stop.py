from dynamo.llm.stop import StopMatcher


def run(m, chunks):
    out, hit = [], False
    for c in chunks:
        text, hit = m.feed(c)
        out.append(text)
        if hit:
            break
    return "".join(out), hit


def test_stop_in_one_chunk():
    m = StopMatcher(["STOP"])
    assert m.feed("hello STOP world") == ("hello ", True)
    assert m.matched == "STOP" and m.stopped
    assert m.feed("more") == ("", True)
    assert m.flush() == ""


def test_stop_spanning_many_chunks():
    m = StopMatcher(["<end>"])
    assert run(m, ["abc <", "e", "n", "d", "> after"]) == ("abc ", True)


def test_partial_prefix_then_mismatch_is_released():
    m = StopMatcher(["STOP"])
    assert m.feed("go ST") == ("go ", False)
    assert m.feed("O") == ("", False)
    assert m.feed("PPED")[1] is True  # STOP completes here
    m = StopMatcher(["STOP"])
    assert m.feed("go ST") == ("go ", False)
    assert m.feed("OX") == ("STOX", False)
    assert m.flush() == ""


def test_overlapping_prefix_restarts():
    m = StopMatcher(["abc"])
    assert run(m, ["a", "a", "b", "c"]) == ("a", True)
    m = StopMatcher(["aab"])
    assert run(m, ["a", "a", "a", "b"]) == ("a", True)


def test_multiple_stops_earliest_wins():
    m = StopMatcher(["world", "lo w", "\n\n"])
    assert m.feed("hello world") == ("hel", True)
    assert m.matched == "lo w"
    m = StopMatcher(["xyz", "\n\n"])
    assert run(m, ["line\n", "\nnext"]) == ("line", True)
    assert m.matched == "\n\n"


def test_flush_releases_held_text():
    m = StopMatcher(["STOP"])
    assert m.feed("the end S") == ("the end ", False)
    assert m.feed("T") == ("", False)
    assert m.flush() == "ST"
    assert m.flush() == ""


def test_concatenation_invariant():
    text = "some text with a sto and stop here and more"
    for size in range(1, 8):
        m = StopMatcher(["stop", "xx"])
        chunks = [text[i:i + size] for i in range(0, len(text), size)]
        out, hit = run(m, chunks)
        assert hit and out == "some text with a sto and "
        m = StopMatcher(["nope"])
        out, hit = run(m, chunks)
        assert not hit and out + m.flush() == text


def test_empty_stop_list_passthrough():
    for stops in ([], None, [""]):
        m = StopMatcher(stops)
        assert not m
        assert m.feed("anything STOP") == ("anything STOP", False)
        assert m.flush() == ""


def test_the_stop_string_is_shown_when_asked_for_and_nothing_after_it():
    """vLLM's include_stop_str_in_output: the matched stop ends the text, whole, across chunks too."""
    assert StopMatcher(["STOP"], include=True).feed("hello STOP world") == ("hello STOP", True)
    assert run(StopMatcher(["<end>", "<e"], include=True), ["abc <", "e", "nd> after"]) == ("abc <e", True)
