"""The real offline packages (VADER, alt-profanity-check, packaged MiniLM) score known sentences in the
expected direction, through the registry and the bank. Not skipped: CI installs the `rewards` extra."""
import sys

import pytest
import torch

import reward_models as rm
from reward_models.relevance import default_embedding_model


@pytest.fixture(scope="module")
def relevance():
    return rm.create("relevance", device="cpu")


def test_vader_sentiment_direction_and_range():
    m = rm.create("sentiment")
    love, hate, neutral = m(["", "", ""], ["I love this, it is wonderful!", "I hate this, it is awful.", "It is a table."])
    assert love > 0.5 and hate < -0.5 and neutral == 0.0
    # VADER's compound for a single "good" (valence 1.9): 1.9 / sqrt(1.9^2 + 15) = 0.4404 (alpha = 15)
    assert m([""], ["good"])[0] == pytest.approx(1.9 / (1.9**2 + 15) ** 0.5, abs=1e-4)


def test_profanity_check_direction():
    m = rm.create("non_offensive")
    polite, rude = m(["", ""], ["Thank you for your help, have a nice day.", "shut up you fucking idiot"])
    assert 0.0 <= rude < 0.5 < polite <= 1.0


def test_relevance_default_model_is_packaged_and_prefers_on_topic_answers(relevance):
    assert default_embedding_model().endswith("model")
    prompts = ["How do I bake bread at home?"] * 2
    on, off = relevance(prompts, ["Mix flour, water, yeast and salt, let it rise, then bake it in the oven.",
                                  "The stock market closed higher on Tuesday."])
    assert -1.0 <= off < on <= 1.0 and on - off > 0.2
    same = relevance(["a red car"], ["a red car"])[0]
    assert same == pytest.approx(1.0, abs=1e-5)


def test_relevance_matches_direct_cosine(relevance):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(default_embedding_model(), device="cpu")
    p, c = ["What is the capital of France?"], ["Paris."]
    e = st.encode(p + c, convert_to_tensor=True)
    expected = torch.nn.functional.cosine_similarity(e[0:1], e[1:2]).item()
    assert relevance(p, c)[0] == pytest.approx(expected, abs=1e-5)
    chat = [[{"role": "system", "content": "be brief"}, {"role": "user", "content": p[0]}]]
    assert relevance(chat, [[{"role": "assistant", "content": "Paris."}]])[0] == pytest.approx(expected, abs=1e-5)


def test_bank_of_offline_models(relevance):
    bank = rm.RewardBank(["sentiment", "non_offensive", relevance, {"type": "brevity"}], batch_size=2)
    s = bank(["Do you like the movie?"] * 3,
             ["I love this movie, it is great.", "I hate this stupid fucking movie.", "The weather is cold."])
    assert s.names == ("sentiment", "non_offensive", "relevance", "brevity")
    assert s.valid.all()
    assert s.values[0, 0] > s.values[1, 0] and s.values[0, 1] > s.values[1, 1]
    assert s.values[0, 2] > s.values[2, 2]
    assert s.values[:, 3].tolist() == [-7.0, -6.0, -4.0]  # word counts, flipped


def test_missing_optional_dependency_names_the_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'multidom\[rewards\]'.*pip install vaderSentiment"):
        rm.create("sentiment")
    monkeypatch.setitem(sys.modules, "profanity_check", None)
    with pytest.raises(ImportError, match=r"pip install alt-profanity-check"):
        rm.create("non_offensive")


def test_missing_relevance_directory_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model directory"):
        rm.create("relevance", model=str(tmp_path / "missing"))
