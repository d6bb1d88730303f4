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


def _oracle(stops, chunks):
    """The whole text up to the earliest stop found once a chunk completes one, else the whole text."""
    seen = ""
    for c in chunks:
        seen += c
        starts = [i for i in (seen.find(s) for s in stops) if i != -1]
        if starts:
            return seen[:min(starts)], True
    return seen, False


def test_long_stop_strings_match_as_short_ones_do_whatever_the_chunking():
    import random
    rng = random.Random(7)
    for _ in range(300):
        text = "".join(rng.choice("ab") for _ in range(rng.randint(50, 400)))
        start = rng.randint(0, len(text) - 1)
        long = text[start:start + rng.randint(65, 140)] + rng.choice(["", "a", "b"])
        stops = [long, "".join(rng.choice("ab") for _ in range(rng.randint(66, 90)))]
        if rng.random() < 0.5:
            stops.append("".join(rng.choice("ab") for _ in range(rng.randint(3, 9))))  # a short one beside
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, min(40, len(text) - 1))))
        chunks = [text[i:j] for i, j in zip([0] + cuts, cuts + [len(text)])]
        m = StopMatcher(stops)
        out, hit = run(m, chunks)
        if not hit:
            out += m.flush()
        assert (out, hit) == _oracle(stops, chunks), (stops, chunks)


def test_a_huge_stop_string_costs_linear_work_not_quadratic_memory():
    stop = "x" * 1_000_000
    m = StopMatcher([stop, "END"])
    assert not m._prefixes - {"E", "EN"}  # the long one keeps no prefix set
    for _ in range(100):
        assert m.feed("x" * 10) == ("", False)  # held: it could still become the stop
    assert m.feed("y END") == ("x" * 1000 + "y ", True) and m.matched == "END"
