"""hf_classifier input templates: the reward model sees the whole conversation in the format it was trained on
(HH-RLHF's Human/Assistant transcript for the HH reward models, whose GPT-2 tokenizers have no chat template)."""
import pytest
import torch
from test_reward_hf import TEMPLATE, _direct, _save_tiny

import reward_models as rm

CONVERSATION = [{"role": "user", "content": "what is two plus two"}, {"role": "assistant", "content": "four"},
                {"role": "user", "content": "how are you"}]
ANSWER = [{"role": "assistant", "content": "i am fine"}]


def test_hh_template_renders_every_turn_as_the_hh_reward_models_expect(tmp_path):
    fast, net = _save_tiny(tmp_path, num_labels=1)
    model = rm.create("hf_classifier", model=str(tmp_path), template="hh", device="cpu")
    q = "\n\nHuman: what is two plus two\n\nAssistant: four\n\nHuman: how are you\n\nAssistant:"
    enc = model.encode([CONVERSATION], [ANSWER])
    want = fast(q, " i am fine", padding=True, truncation=True, max_length=1024, return_tensors="pt")
    assert torch.equal(enc["input_ids"], want["input_ids"])
    assert float(model([CONVERSATION], [ANSWER])[0]) == pytest.approx(float(_direct(fast, net, q, " i am fine")[0, 0]),
                                                                      abs=1e-5)
    # a string prompt is one Human turn
    assert torch.equal(model.encode(["how are you"], ["i am fine"])["input_ids"],
                       fast("\n\nHuman: how are you\n\nAssistant:", " i am fine", return_tensors="pt")["input_ids"])


def test_pair_and_chat_templates_see_the_whole_conversation(tmp_path):
    fast, net = _save_tiny(tmp_path, num_labels=1, chat_template=TEMPLATE)
    pair = rm.create("hf_classifier", model=str(tmp_path), template="pair", device="cpu")
    enc = pair.encode([CONVERSATION], [ANSWER])
    want = fast("what is two plus two\nfour\nhow are you", "i am fine", return_tensors="pt")
    assert torch.equal(enc["input_ids"], want["input_ids"])  # earlier turns included, not only the last
    chat = rm.create("hf_classifier", model=str(tmp_path), device="cpu")
    assert chat.template == "chat"
    text = fast.apply_chat_template(CONVERSATION + ANSWER, tokenize=False)
    assert "two plus two" in text
    assert torch.equal(chat.encode([CONVERSATION], [ANSWER])["input_ids"],
                       fast(text, add_special_tokens=False, return_tensors="pt")["input_ids"])


def test_template_errors(tmp_path):
    _save_tiny(tmp_path, num_labels=1)
    with pytest.raises(ValueError, match="unknown template 'hhh'; choose from"):
        rm.create("hf_classifier", model=str(tmp_path), template="hhh")
    with pytest.raises(ValueError, match="has none .no chat template.; use template: pair or hh"):
        rm.create("hf_classifier", model=str(tmp_path), template="chat")
    with pytest.raises(ValueError, match="template= or chat_template=, not both"):
        rm.create("hf_classifier", model=str(tmp_path), template="hh", chat_template=False)
