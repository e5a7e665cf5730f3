"""hf_classifier: a tiny random-weight classifier saved to disk and loaded back, against a direct forward pass."""
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

import reward_models as rm
from reward_models import RewardBank

WORDS = "hello there how are you i am fine the answer is four what two plus good bad".split()
PROMPTS = ["what is two plus two", "how are you", "hello"]
COMPS = ["the answer is four", "i am fine thank you", "bad bad bad"]
TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"


def _save_tiny(path, num_labels, labels=None, chat_template=None):
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[", "]", *WORDS, "user", "assistant"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]")
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(path)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_labels=num_labels)
    if labels:
        cfg.id2label = dict(enumerate(labels))
        cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    net = BertForSequenceClassification(cfg).eval()
    net.save_pretrained(path)
    return fast, net


def _direct(fast, net, a, b=None):
    enc = fast(a, b, padding=True, truncation=True, max_length=1024, return_tensors="pt",
               **({"add_special_tokens": False} if b is None else {}))
    with torch.no_grad():
        return net(**enc).logits


def test_one_head_matches_direct_forward(tmp_path):
    fast, net = _save_tiny(tmp_path, num_labels=1)
    model = rm.create({"type": "hf_classifier", "model": str(tmp_path), "name": "rm", "device": "cpu"})
    expected = _direct(fast, net, PROMPTS, COMPS)[:, 0]
    torch.testing.assert_close(torch.tensor(model(PROMPTS, COMPS)), expected)
    assert model.attribute_names == ("rm",) and model.__name__ == "rm"
    # batching does not change the scores
    small = rm.create("hf_classifier", model=str(tmp_path), batch_size=1, device="cpu")
    torch.testing.assert_close(torch.tensor(small(PROMPTS, COMPS)), expected)
    assert not any(p.requires_grad for p in model.net.parameters())


def test_several_heads_expand_into_named_attributes(tmp_path):
    labels = ["helpfulness", "correctness", "verbosity"]
    fast, net = _save_tiny(tmp_path, num_labels=3, labels=labels)
    expected = _direct(fast, net, PROMPTS, COMPS)
    with pytest.raises(ValueError, match="has 3 heads .*choose one with head="):
        rm.create("hf_classifier", model=str(tmp_path))
    multi = rm.create("hf_classifier", model=str(tmp_path), heads="all", name="hs", device="cpu")
    assert multi.attribute_names == ("hs/helpfulness", "hs/correctness", "hs/verbosity")
    torch.testing.assert_close(torch.tensor(multi.score(PROMPTS, COMPS)), expected)
    two = rm.create("hf_classifier", model=str(tmp_path), heads=["verbosity", 0], name="hs", higher_is_better=True)
    s = RewardBank([two, {"type": "length"}])(PROMPTS, COMPS)
    assert s.names == ("hs/verbosity", "hs/helpfulness", "length")
    torch.testing.assert_close(s.values[:, :2], expected[:, [2, 0]])
    with pytest.raises(TypeError, match="pass model.split\\(\\) to TRL"):
        multi(PROMPTS, COMPS)
    views = multi.split()
    assert [v.__name__ for v in views] == list(multi.attribute_names)
    torch.testing.assert_close(torch.tensor(views[1](PROMPTS, COMPS)), expected[:, 1])
    one = rm.create("hf_classifier", model=str(tmp_path), head="correctness", activation="softmax")
    torch.testing.assert_close(torch.tensor(one(PROMPTS, COMPS)), expected.softmax(-1)[:, 1])


def test_chat_template_is_applied(tmp_path):
    fast, net = _save_tiny(tmp_path, num_labels=1, chat_template=TEMPLATE)
    model = rm.create("hf_classifier", model=str(tmp_path), device="cpu")
    assert model.use_chat_template
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    comps = [[{"role": "assistant", "content": c}] for c in COMPS]
    texts = [f"[user] {p} [assistant] {c} " for p, c in zip(PROMPTS, COMPS)]
    expected = _direct(fast, net, texts)[:, 0]
    torch.testing.assert_close(torch.tensor(model(chats, comps)), expected)
    torch.testing.assert_close(torch.tensor(model(PROMPTS, COMPS)), expected)  # strings become messages
    plain = rm.create("hf_classifier", model=str(tmp_path), chat_template=False)
    torch.testing.assert_close(torch.tensor(plain(PROMPTS, COMPS)), _direct(fast, net, PROMPTS, COMPS)[:, 0])


def test_missing_path_and_unreachable_hub_say_pass_a_local_path(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no model directory at"):
        rm.create("hf_classifier", model=str(tmp_path / "nope"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="pass the local path"):
        rm.create("hf_classifier", model="multidom-test/definitely-not-cached-reward-model")


def test_bad_options(tmp_path):
    _save_tiny(tmp_path, num_labels=2)
    with pytest.raises(ValueError, match="no head labelled 'x'"):
        rm.create("hf_classifier", model=str(tmp_path), head="x")
    with pytest.raises(ValueError, match="head 5 out of range"):
        rm.create("hf_classifier", model=str(tmp_path), head=5)
    with pytest.raises(ValueError, match="not both"):
        rm.create("hf_classifier", model=str(tmp_path), head=0, heads="all")
    with pytest.raises(ValueError, match="unknown activation"):
        rm.create("hf_classifier", model=str(tmp_path), head=0, activation="relu")
    with pytest.raises(ValueError, match="has none"):
        rm.create("hf_classifier", model=str(tmp_path), head=0, chat_template=True)
    with pytest.raises(ValueError, match="unknown dtype"):
        rm.create("hf_classifier", model=str(tmp_path), head=0, dtype="float7")


def test_chat_template_changes_the_input(tmp_path):
    """The template test above can fail: with and without the template the classifier sees different text."""
    _save_tiny(tmp_path, num_labels=1, chat_template=TEMPLATE)
    templ = rm.create("hf_classifier", model=str(tmp_path))
    plain = rm.create("hf_classifier", model=str(tmp_path), chat_template=False)
    assert not torch.allclose(torch.tensor(templ(PROMPTS, COMPS)), torch.tensor(plain(PROMPTS, COMPS)))


def test_length_in_tokens_of_a_local_tokenizer(tmp_path):
    _save_tiny(tmp_path, num_labels=1)
    m = rm.create("length", unit="tokens", tokenizer=str(tmp_path))
    # word-level tokenizer with the BERT pre-tokenizer: "hello, there" -> hello , there (no special tokens)
    assert m(["p", "p"], ["hello, there", "i am fine"]) == [3.0, 3.0]
    assert rm.create("length", unit="tokens", tokenizer=str(tmp_path), target=2)(["p"], ["hello"]) == [-1.0]


def test_dtype_is_applied(tmp_path):
    fast, net = _save_tiny(tmp_path, num_labels=1)
    half = rm.create("hf_classifier", model=str(tmp_path), dtype="bfloat16", device="cpu")
    assert next(half.net.parameters()).dtype == torch.bfloat16
    scores = torch.tensor(half(PROMPTS, COMPS))
    assert scores.dtype == torch.float32  # scores come back as Python floats from float32 logits
    torch.testing.assert_close(scores, _direct(fast, net, PROMPTS, COMPS)[:, 0], atol=0.05, rtol=0.05)
