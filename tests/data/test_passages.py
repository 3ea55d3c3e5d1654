"""The held-out passage in which a name recurs most."""

from circuits.data.passages import find_repeated_passage, most_repeated_name


def test_most_repeated_name():
    text = "Mr. Perry came. She said Perry would. The doctor, Perry, left. She saw Emma. the end"
    assert most_repeated_name(text) == ("Perry", 3)  # "She" and "The" also appear in lower case / short
    assert most_repeated_name("nothing here") == (None, 0)


def test_find_repeated_passage_with_the_committed_tokenizer():
    from circuits.data.tokenizer import load_tokenizer

    tok = load_tokenizer("bpe4k")
    filler = "It was a fine day and the garden was quiet. " * 6
    docs = [{"text": filler * 3, "source": "a", "doc_id": "a/1"},
            {"text": filler + "Then Harriet spoke to Harriet's friend, and Harriet smiled. " + filler,
             "source": "b", "doc_id": "b/2"}]
    p = find_repeated_passage(docs, tok, n_tokens=40)
    assert p["doc_id"] == "b/2" and p["name"] == "Harriet" and p["count"] == 3
    assert len(p["token_ids"]) == len(p["tokens_str"]) == 40
    assert "".join(p["tokens_str"]) == p["text"] and p["text"].count("Harriet") == 3
    assert find_repeated_passage(docs, tok, n_tokens=40, source="a") is None
