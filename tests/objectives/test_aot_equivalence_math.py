"""The 1-D logistic violation is TRL's AOT loss (arXiv 2406.05882; DESIGN.md §3.1).

TRL's ``DPOTrainer`` computes ``aot_unpaired`` as ``mean_i -logsigmoid(beta (u_(i) - v_(i)))`` on the
sorted chosen / rejected log-ratios and ``aot`` on the sorted policy / reference chosen-minus-rejected
log-probabilities. Here TRL's own trainer computes its loss on a tiny random-weight model, and
``multidom.violation(..., estimator="quantile", cost="logistic")`` is evaluated on sequence
log-probabilities computed independently from a plain forward pass of the same models: same value to
float32 precision and same gradient in the model parameters.
"""
from __future__ import annotations

import copy
import string

import pytest
import torch
from datasets import Dataset
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import DPOConfig, DPOTrainer

import multidom

BETA = 0.5


def char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<unk>"] + list(string.ascii_letters + ":?! "))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def tiny_llama(vocab: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, eos_token_id=1, bos_token_id=1,
    ))


def rows(n: int) -> dict[str, list[str]]:
    g = torch.Generator().manual_seed(0)
    letters = string.ascii_lowercase
    pick = lambda k: "".join(letters[i] for i in torch.randint(0, 26, (k,), generator=g).tolist())  # noqa: E731
    return {"prompt": [pick(3 + i % 3) + "?" for i in range(n)],
            "chosen": [pick(2 + i % 4) for i in range(n)],
            "rejected": [pick(3 + i % 2) for i in range(n)]}


def sequence_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over completion tokens of log p(token | prefix); TRL's batch is [chosen; rejected]."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["input_ids"][:, 1:]
    token_logps = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None])[..., 0]
    logps = (token_logps * batch["completion_mask"][:, 1:]).sum(-1)
    return logps.chunk(2)


@pytest.mark.parametrize("loss_type", ["aot_unpaired", "aot"])
def test_logistic_quantile_violation_is_trl_aot_loss(tmp_path, loss_type):
    tok = char_tokenizer()
    ref = tiny_llama(len(tok), seed=1)
    policy = copy.deepcopy(ref)
    with torch.no_grad():  # move the policy off the reference so the sort orders differ
        for p in policy.parameters():
            p.add_(0.5 * torch.randn_like(p))
    args = DPOConfig(output_dir=str(tmp_path), loss_type=[loss_type], beta=BETA, per_device_train_batch_size=8,
                     report_to="none", use_cpu=True, bf16=False, max_length=64, gradient_checkpointing=False)
    trainer = DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(ref), args=args,
                         processing_class=tok, train_dataset=Dataset.from_dict(rows(8)))
    batch = next(iter(trainer.get_train_dataloader()))
    trl_model = trainer.model
    trl_model.zero_grad()
    trl_loss = trainer.compute_loss(trl_model, batch)
    trl_loss.backward()
    trl_grads = {n: p.grad.clone() for n, p in trl_model.named_parameters()}

    ours_model = copy.deepcopy(policy)
    pc, pr = sequence_logps(ours_model, batch)
    with torch.no_grad():
        rc, rr = sequence_logps(ref, batch)
    if loss_type == "aot_unpaired":  # U = chosen log-ratios dominate V = rejected log-ratios
        u, v = pc - rc, pr - rr
    else:  # Z = policy chosen-minus-rejected dominates Z_ref
        u, v = pc - pr, rc - rr
    ours = multidom.violation(u[:, None], v[:, None], estimator="quantile", cost="logistic", cost_gain=BETA)
    ours.backward()

    assert ours.shape == ()
    assert trl_loss.item() > 0.05
    assert ours.item() == pytest.approx(trl_loss.item(), rel=1e-6, abs=1e-7)
    for name, p in ours_model.named_parameters():
        torch.testing.assert_close(p.grad, trl_grads[name], rtol=1e-4, atol=1e-7, msg=name)
    # the sort matters: unsorted pairing gives a different number
    unsorted = torch.nn.functional.softplus(BETA * (v - u)).mean()
    assert abs(unsorted.item() - ours.item()) > 1e-4
