"""The fast trial path computes what the seed recipe computes, only faster.

Correctness only (speed is `pricer bench`'s job, never a test): price-only logits give the
full-vocabulary loss and the same LoRA gradients (the two tiny models and each toy family, Gemma 2's
soft cap included); the benchmark command runs end to end on the real shapes' configs.
"""

from __future__ import annotations

import contextlib
import json

import pytest

# Product text tokens per prompt: short prompts keep this file near a minute on two cores.
TEXT_TOKENS = 32


@pytest.fixture(scope="module", params=["toy-llama-3.1", "gemma-3-270m"])
def loaded(request, tiny_models, toys, load_4bit):
    """A 4-bit model as a trial loads it (repack trap defused), and its tokenizer: the toy Llama
    (the Llama class SmolLM2 is too, with SmolLM2's tokenizer, at a fraction of its compute) and
    Gemma 3 270M (a head tied to a 262k vocabulary's embeddings; no toy has its architecture)."""
    model, tokenizer = load_4bit(request.param)
    return {**tiny_models, **toys}[request.param], model, tokenizer


@pytest.fixture(scope="module")
def loaded_fp32(loaded):
    """`loaded`, computing in fp32 on every CPU. Micro-batches, checkpointing and the attention
    switch are exact there (1e-6 apart). In bf16, eager and sdpa attention round differently: a
    Gemma 3 gradient's cosine was 0.968 on an AVX512-bf16 CPU, which says nothing about the step."""
    import torch

    from pricer.model.loading import load_model

    spec, model, tokenizer = loaded
    if model.dtype != torch.float32:
        model, tokenizer = load_model(spec, "nf4", dtype=torch.float32)
    return spec, model, tokenizer


@pytest.fixture(scope="module")
def validation(small_data):
    return small_data["validation"]


def _tolerance(model) -> float:
    import torch

    # bf16 compute (AVX512-bf16 CPUs, GPUs) rounds the two paths' differently shaped matmuls
    # differently (a loss 1.1e-4 apart was measured on one); fp32 agrees closely
    return 2e-2 if model.dtype == torch.bfloat16 else 1e-4


@contextlib.contextmanager
def random_lora(spec, base, targets: str = "attention"):
    """LoRA r 8 on the attention (or all linear) projections of `base`, removed afterwards. B starts
    random, not zero (init_lora_weights=False), so A gets a gradient worth comparing."""
    import torch
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=8, lora_alpha=2, lora_dropout=0.0, target_modules=spec.target_modules(targets),
                      init_lora_weights=False)
    torch.manual_seed(0)
    model = get_peft_model(base, lora)
    try:
        model.train()
        yield model
    finally:
        model.unload()


def assert_same_gradients(grads, ref_grads, tol):
    import torch

    for name, ref in ref_grads.items():
        got, ref = grads[name].float().flatten(), ref.float().flatten()
        cosine = torch.nn.functional.cosine_similarity(got, ref, dim=0).item()
        assert cosine > 1 - tol, f"{name}: gradient direction differs (cosine {cosine:.6f})"
        assert got.norm().item() == pytest.approx(ref.norm().item(), rel=10 * tol), name


# the two tiny models (real weights, their own prompts) and each toy family's base entry (random
# weights, all linear layers adapted; Gemma 2's final-logit soft cap included)
PRICE_ONLY_MODELS = ["smollm2-135m-instruct", pytest.param("gemma-3-270m", marks=pytest.mark.slow),  # 262k vocabulary
                     "toy-llama-3.1", "toy-gemma-2", "toy-qwen2.5"]


@pytest.mark.parametrize("name", PRICE_ONLY_MODELS)
def test_price_only_loss_and_lora_gradients_equal_the_full_vocabulary_reference(name, tiny_models, toys,
                                                                                 load_4bit, validation):
    import torch

    from pricer.model.prompts import encode_many
    from pricer.train.step import collate, price_only_loss

    spec = {**tiny_models, **toys}[name]
    base, tokenizer = load_4bit(name)
    with random_lora(spec, base, "all-linear" if name.startswith("toy-") else "attention") as model:
        examples = encode_many(tokenizer, validation["text"][:3], validation["price"][:3], chat=spec.chat,
                               max_tokens=TEXT_TOKENS)
        batch = collate(examples, tokenizer.pad_token_id, torch.device("cpu"))
        lora_params = {n: p for n, p in model.named_parameters() if p.requires_grad}

        def loss_and_grads(compute):
            model.zero_grad(set_to_none=True)
            loss = compute()
            loss.backward()
            return loss.item(), {n: p.grad for n, p in lora_params.items()}

        ref_loss, ref_grads = loss_and_grads(lambda: model(**batch).loss)  # logits at every position
        loss, grads = loss_and_grads(lambda: price_only_loss(model, **batch))
        if spec.family == "gemma2":  # the toy's logits are wide enough for the cap to matter
            config = base.config
            cap, config.final_logit_softcapping = config.final_logit_softcapping, None
            try:
                with torch.no_grad():
                    uncapped = price_only_loss(model, **batch).item()
            finally:
                config.final_logit_softcapping = cap
            assert abs(uncapped - loss) > 0.1 * loss, (uncapped, loss)

    tol = _tolerance(base)
    assert loss == pytest.approx(ref_loss, rel=tol)
    missing = sorted(n for n, g in grads.items() if g is None or not g.abs().sum())
    assert not missing, f"no LoRA gradient for {len(missing)} of {len(grads)} tensors, e.g. {missing[:2]}"
    assert_same_gradients(grads, ref_grads, tol)


@pytest.mark.slow
def test_micro_batches_checkpointing_and_eager_attention_give_the_whole_batch_loss_and_gradients(
        loaded_fp32, validation):
    """The memory plan may split a step or recompute its activations, and a CPU trial may switch
    to eager attention; the step stays the same."""
    import torch

    from pricer.model.prompts import encode
    from pricer.train.step import collate, parts, price_only_loss

    spec, base, tokenizer = loaded_fp32
    with random_lora(spec, base) as model:
        # different text budgets: rows of different lengths and padding, prices of 1-3 digits
        examples = [encode(tokenizer, text, price, chat=spec.chat, max_tokens=budget)
                    for text, price, budget in zip(validation["text"][:4], [7.0, 129.99, 45.5, 999.0],
                                                   [32, 12, 24, 8], strict=True)]
        batch = collate(examples, tokenizer.pad_token_id, torch.device("cpu"))
        lora_params = {n: p for n, p in model.named_parameters() if p.requires_grad}

        def step(size):
            model.zero_grad(set_to_none=True)
            total = 0.0
            for part, share in parts(batch, size):
                loss = price_only_loss(model, **part) * share
                loss.backward()
                total += loss.item()
            return total, {n: p.grad.clone() for n, p in lora_params.items()}

        whole_loss, whole = step(4)
        split_loss, split = step(3)  # parts of 3 and 1: unequal shares
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        try:
            ckpt_loss, ckpt = step(3)
        finally:
            base.gradient_checkpointing_disable()
        attention = base.config._attn_implementation
        base.set_attn_implementation("eager")
        try:
            eager_loss, eager = step(3)
        finally:
            base.set_attn_implementation(attention)

    assert len({len(e.input_ids) for e in examples}) > 1
    for loss, grads in ((split_loss, split), (ckpt_loss, ckpt), (eager_loss, eager)):
        assert loss == pytest.approx(whole_loss, rel=1e-4)
        assert_same_gradients(grads, whole, 1e-4)


def test_generate_runs_the_output_head_as_one_matmul_on_the_last_positions(loaded, validation):
    """generate() slices the last position; the head must not copy its weight for every prompt."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from pricer.model.batches import pad_batch
    from pricer.model.prompts import encode_many

    spec, model, tokenizer = loaded
    prompts = [e.prompt_ids for e in encode_many(tokenizer, validation["text"][:4], chat=spec.chat,
                                                   max_tokens=TEXT_TOKENS)]
    batch = pad_batch(prompts, tokenizer.pad_token_id, side="left")
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    vocab = model.get_output_embeddings().weight.shape[0]
    model.eval()
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1).logits
    assert logits.shape[:2] == (4, 1)
    batched_heads = [e.input_shapes for e in prof.events()
                     if e.name == "aten::bmm" and any(s and s[-1] == vocab for s in e.input_shapes)]
    assert not batched_heads, f"the head ran as a batched matmul over copies of its weight: {batched_heads}"


@pytest.mark.slow
def test_a_tight_memory_budget_splits_the_step_and_it_still_trains(small_data, tiny_models):
    from datasets import DatasetDict

    from pricer.train.config import TrainConfig
    from pricer.train.loop import setup
    from pricer.train.step import micro_batches, train_step

    data = DatasetDict({"train": small_data["train"], "validation": small_data["validation"].select(range(2)),
                        "test": small_data["test"].select([])})
    config = TrainConfig(model="smollm2-135m-instruct", batch_size=4, max_tokens=TEXT_TOKENS, max_steps=1,
                         target_modules="attention", warmup_steps=0)
    roomy = setup(config, data, spec=tiny_models["smollm2-135m-instruct"], memory_budget_gib=64)
    assert (roomy.plan.micro_batch_size, roomy.plan.gradient_checkpointing) == (4, False)
    # the memory guard plans before loading, and plans the step setup then makes
    from sweeps.run import guard
    assert guard.check(config, roomy.spec, budget=64).estimate == roomy.plan.estimate
    # half the whole batch's activations fit (the estimate's total is its parts x 1.15)
    budget = roomy.plan.estimate.total - roomy.plan.estimate.activations * 0.5
    del roomy
    tight = setup(config, data, spec=tiny_models["smollm2-135m-instruct"], memory_budget_gib=budget)
    assert tight.plan.fits and tight.plan.micro_batch_size == 2 and not tight.plan.gradient_checkpointing
    assert tight.model.config._attn_implementation == "eager"  # short prompts on a CPU
    assert train_step(tight, [next(micro_batches(tight))]) > 0
    lora_b = [p for n, p in tight.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # zero at init: the step reached them all


@pytest.mark.slow
def test_bench_json_reports_both_paths(capsys, built_data):
    from sweeps.cli.main import main

    # the toy Llama: the path end to end in seconds (the tiny models' numbers are the bench's to give)
    argv = ["bench", "--model", "toy-llama-3.1", "--steps", "1", "--batch-size", "2",
            "--max-tokens", "80", "--eval-items", "2", "--data", str(built_data), "--json"]
    assert main(argv) == 0

    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"train_tokens_per_s", "train_tokens_per_s_ref", "eval_items_per_s",
                        "eval_items_per_s_ref", "peak_mem_gib", "peak_mem_gib_ref", "load_s", "load_s_ref",
                        "mae", "mae_ref"}
    for key in ("train_tokens_per_s", "train_tokens_per_s_ref", "eval_items_per_s", "eval_items_per_s_ref",
                "peak_mem_gib", "peak_mem_gib_ref", "load_s", "load_s_ref"):
        assert out[key] > 0, (key, out)


@pytest.mark.parametrize("name", ["llama-3.1-8b", "qwen2.5-7b", "gemma-2-2b"])
def test_bench_shape_configs_rebuild_the_real_architectures(name):
    """`bench --shape` times random weights of these configs: they must be the published shapes."""
    from pricer.model.shapes import SHAPES, ModelShape, shape_config

    assert ModelShape.from_config(shape_config(SHAPES[name])) == SHAPES[name]


def test_cpu_dropout_drops_p_of_the_elements_keeps_the_mean_and_is_off_in_eval():
    import torch

    from pricer.train.dropout import CpuDropout

    torch.manual_seed(0)
    x = torch.ones(1000, 999, dtype=torch.bfloat16)  # an odd size: the last 64-bit draw is cut
    dropout = CpuDropout(0.1)
    y = dropout(x)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(0.1, abs=0.002)
    assert y.float().mean().item() == pytest.approx(1.0, abs=0.005)
    assert not torch.equal(dropout(x), y)  # a fresh mask each call
    dropout.eval()
    assert dropout(x) is x


@pytest.mark.slow
def test_a_cpu_trial_runs_its_lora_dropout_as_cpu_dropout_and_trains(small_data, tiny_models):
    import torch
    from datasets import DatasetDict

    from pricer.train.config import TrainConfig
    from pricer.train.dropout import CpuDropout
    from pricer.train.loop import setup
    from pricer.train.step import micro_batches, train_step

    data = DatasetDict({"train": small_data["train"].select(range(4)), "validation": small_data["validation"].select(range(2)),
                        "test": small_data["test"].select([])})
    config = TrainConfig(model="smollm2-135m-instruct", batch_size=2, max_tokens=TEXT_TOKENS, max_steps=1,
                         target_modules="attention", lora_dropout=0.1, warmup_steps=0)
    run = setup(config, data, spec=tiny_models["smollm2-135m-instruct"])
    dropouts = [m for m in run.model.modules() if isinstance(m, CpuDropout)]
    assert len(dropouts) == 4 * 30  # q/k/v/o in each of SmolLM2's 30 layers
    assert not any(type(m) is torch.nn.Dropout and m.p > 0 for m in run.model.modules())
    assert train_step(run, [next(micro_batches(run))]) > 0
    assert all(p.abs().sum() > 0 for n, p in run.model.named_parameters() if "lora_B" in n)
