"""QuadA (``privinf align --method quada``) and ``privinf safety compare`` on a tiny random model.

The trainer is built through the lead's ``train._trainer`` on hand-made pairs (no data building,
no base answers), so each test is one or two DPO forwards of a 2-layer model.
"""

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from privinf.align.quada import cluster_loss, content_mask, prompt_mean

ROWS = [
    {"prompt": "w10 w11 w12 w13", "chosen": "w20 w21 w22", "rejected": "w30 w31 w32 w33", "kind": "harmful"},
    {"prompt": "w14 w15 w16", "chosen": "w23 w24", "rejected": "w34 w35 w36", "kind": "harmful"},
    {"prompt": "w17 w18 w19 w40 w41", "chosen": "w25 w26 w27", "rejected": "w37", "kind": "harmful"},
    {"prompt": "w42 w43", "chosen": "w50 w51 w52 w53", "rejected": "w60 w61", "kind": "benign"},
]


@pytest.fixture
def init_adapter(tiny_model_dir, tmp_path):
    """A LoRA adapter with non-zero B (so the reference differs from the base model), saved."""
    from peft import LoraConfig, get_peft_model

    from privinf.align.train import save_adapter
    from privinf.models import load_model

    torch.manual_seed(0)
    model, _ = load_model(str(tiny_model_dir))
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.2)
    save_adapter(peft, tmp_path / "init")
    return tmp_path / "init"


def _cfg(tiny_model_dir, init_adapter, tmp_path, **kw):
    from privinf.align.train import AlignConfig

    base = dict(method="quada", model=str(tiny_model_dir), init=str(init_adapter), output=str(tmp_path / "q"),
                batch_size=4, max_steps=1, max_length=64, mva="up:gaussian:0.5,down:laplace:0.3",
                perturb_layers=(0,), cluster_weight=0.1)
    return AlignConfig(**(base | kw))


def _trainer(cfg, tmp_path, rows=ROWS):
    from privinf.align.train import _lora, _trainer
    from privinf.models import load_model

    torch.manual_seed(0)
    model, tok = load_model(cfg.model)
    model = _lora(model, cfg)
    model.train()
    tr = _trainer(cfg, model, tok, rows, tmp_path / f"ckpt-{id(cfg)}", [])
    batch = tr.data_collator([tr.train_dataset[i] for i in range(len(rows))])
    return tr, batch


def _loss(tr, batch):
    return tr.compute_loss(tr.model, dict(batch))


# ------------------------------------------------------------------------------------------ the perturbation


def test_noise_reaches_only_chosen_layers_and_sites_never_the_reference(tiny_model_dir, init_adapter, tmp_path):
    from privinf.emulator.hookpoints import decoder_layers

    cfg = _cfg(tiny_model_dir, init_adapter, tmp_path, mva="up:gaussian:0.5", perturb_layers=(1,))
    tr, batch = _trainer(cfg, tmp_path)
    base = tr.model.get_base_model()
    watched = [m for layer in decoder_layers(base) for m in (layer.post_attention_layernorm, layer.mlp.down_proj)]
    seen_in_ref, real = [], tr.compute_ref_log_probs

    def spy(model, inputs):  # during the reference pass no module of any layer carries a hook
        seen_in_ref.append(sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in watched))
        return real(model, inputs)

    tr.compute_ref_log_probs = spy
    losses = [float(_loss(tr, batch)) for _ in range(3)]
    assert seen_in_ref == [0, 0, 0] and tr.ref_passes == 3
    assert set(tr.noise_calls) == {(1, "up")} and tr.noise_calls[(1, "up")] == 3  # one per policy forward
    assert len(set(losses)) == 3  # fresh noise at every forward
    # the reference the loss used is the clean init adapter: the same as a trainer without noise computes
    clean, cbatch = _trainer(replace(cfg, perturb="none", mva=None, cluster_weight=0.0), tmp_path)
    inputs = {k: v for k, v in batch.items() if k != "harmful"}
    ref_q = real(tr.model, inputs)
    ref_c = clean.compute_ref_log_probs(clean.model, {k: v for k, v in cbatch.items() if k != "harmful"})
    for a, b in zip(ref_q, ref_c):
        torch.testing.assert_close(a, b)
    # the noise changed the policy's loss; without noise the policy (the init adapter before any step)
    # equals the reference, so the reference is the init adapter and not the base model
    assert abs(float(_loss(clean, cbatch)) - losses[0]) > 1e-4
    assert clean._metrics["train"]["rewards/chosen"][-1] == pytest.approx(0.0, abs=1e-4)
    assert abs(tr._metrics["train"]["rewards/chosen"][-1]) > 1e-3


def test_cluster_term_gradient_and_values():
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cluster_loss, (x,))
    v = torch.randn(1, 7, dtype=torch.float64)
    assert float(cluster_loss(torch.cat([v, 2 * v, 3 * v]))) == pytest.approx(0.0, abs=1e-12)
    assert float(cluster_loss(torch.cat([v, -v]))) == pytest.approx(2.0)
    assert float(cluster_loss(v)) == 0.0  # fewer than two harmful prompts: no term
    hidden = torch.arange(10.0).view(2, 5, 1)  # (B, T, C)
    completion = torch.tensor([[0, 0, 0, 1, 1], [0, 1, 1, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert prompt_mean(hidden, attention, completion)[:, 0].tolist() == [1.0, 5.0]  # prompt tokens only


def test_content_mask_drops_the_template_every_prompt_shares():
    # right-padded rows: template prefix [1, 2], content, assistant header [8, 9], then the completion
    ids = torch.tensor([[1, 2, 5, 6, 8, 9, 30, 31, 0],
                        [1, 2, 7, 8, 9, 32, 0, 0, 0],
                        [1, 2, 5, 4, 3, 8, 9, 33, 34]])
    prompt = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0, 0],
                           [1, 1, 1, 1, 1, 0, 0, 0, 0],
                           [1, 1, 1, 1, 1, 1, 1, 0, 0]])
    keep = content_mask(ids, prompt)
    assert [ids[b][keep[b]].tolist() for b in range(3)] == [[5, 6], [7], [5, 4, 3]]
    # left padding and a shared first content token (it is shared, so it goes too)
    ids2 = torch.tensor([[0, 1, 5, 6, 9], [1, 5, 7, 7, 9]])
    prompt2 = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert [ids2[b][content_mask(ids2, prompt2)[b]].tolist() for b in range(2)] == [[6], [7, 7]]
    # nothing would be left (identical prompts) or a single row: the whole prompt
    same = torch.tensor([[1, 2, 3], [1, 2, 3]])
    assert content_mask(same, torch.ones_like(same)).all()
    assert content_mask(ids[:1], prompt[:1]).tolist() == prompt[:1].bool().tolist()


# ------------------------------------------------------------------------------------------ ablation flags


def test_perturb_card_runs_the_policy_under_the_cards_arithmetic_only(tiny_model_dir, init_adapter, tmp_path):
    """--perturb card: the chosen layers compute the card's arithmetic (both sites) in the policy
    forward, never in the reference; no randomness, so repeated forwards agree; the LoRA gets a gradient."""
    from privinf.emulator.hookpoints import decoder_layers

    cfg = _cfg(tiny_model_dir, init_adapter, tmp_path, perturb="card", card="nexus", mva=None, perturb_layers=(1,))
    tr, batch = _trainer(cfg, tmp_path)
    base = tr.model.get_base_model()
    watched = [m for layer in decoder_layers(base) for m in layer.modules()]
    seen_in_ref, real = [], tr.compute_ref_log_probs

    def spy(model, inputs):
        seen_in_ref.append(sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in watched))
        return real(model, inputs)

    tr.compute_ref_log_probs = spy
    losses = [_loss(tr, batch) for _ in range(2)]
    assert seen_in_ref == [0, 0]
    assert set(tr.noise_calls) == {(1, "up"), (1, "down")} and tr.noise_calls[(1, "down")] == 2
    assert float(losses[0].detach()) == pytest.approx(float(losses[1].detach()), rel=1e-6)  # deterministic
    clean, cbatch = _trainer(replace(cfg, perturb="none", card=None), tmp_path)
    assert abs(float(_loss(clean, cbatch)) - float(losses[0].detach())) > 1e-5  # the card changed the policy's loss
    losses[0].backward()
    lora = [p.grad for n, p in tr.model.named_parameters() if "lora_" in n and p.requires_grad]
    assert lora and all(g is not None and torch.isfinite(g).all() for g in lora)
    assert sum(float(g.abs().sum()) for g in lora) > 0
    prov = tr.provenance()
    assert prov["perturb"] == "card" and prov["card"] == "nexus" and prov["layers"] == [1]
    assert prov["sites"] == ["up", "down"] and prov["mva"] is None and "straight-through" in prov["noise"]
    with pytest.raises(ValueError, match="sparsif"):
        _trainer(replace(cfg, card="teal-50"), tmp_path)


def test_perturb_none_without_cluster_is_plain_dpo(tiny_model_dir, init_adapter, tmp_path):
    cfg = _cfg(tiny_model_dir, init_adapter, tmp_path, perturb="none", mva=None, cluster_weight=0.0)
    tr, batch = _trainer(cfg, tmp_path)
    dpo, dbatch = _trainer(replace(cfg, method="dpo"), tmp_path)
    assert type(dpo).__name__ == "DPOTrainer"
    q = _loss(tr, batch)
    d = dpo.compute_loss(dpo.model, {k: v for k, v in dbatch.items() if k != "harmful"})
    # equal up to float rounding: the reference comes from TRL's compute_ref_log_probs (its own
    # precompute path) instead of the inline pass, which differs by ~1e-5 nats in the summed log-probs
    torch.testing.assert_close(q, d, rtol=2e-4, atol=1e-6)
    assert not tr.noise_calls
    prov = tr.provenance()  # the record says nothing was perturbed, not which layers would have been
    assert prov["perturb"] == "none" and prov["layers"] == [] and prov["tau"] is None and prov["sites"] == []
    assert tr.last_terms["sft"] > 0 and tr.last_terms["harmful"] == 3
    assert tr.last_terms["total"] == pytest.approx(tr.last_terms["dpo"] + cfg.sft_weight * tr.last_terms["sft"], rel=1e-5)


@pytest.mark.parametrize("method", ["dpo", "quada"])
def test_kl_anchor_adds_weight_times_kl_to_dpo_and_quada(tiny_model_dir, init_adapter, tmp_path, method):
    cfg = _cfg(tiny_model_dir, init_adapter, tmp_path, method=method, perturb="none", mva=None, cluster_weight=0.0)
    plain, batch = _trainer(cfg, tmp_path)
    anch, abatch = _trainer(replace(cfg, anchor_weight=0.5), tmp_path)
    assert type(anch).__name__ == f"Anchored{type(plain).__name__}"
    drop = {"harmful"} if method == "dpo" else set()
    base = plain.compute_loss(plain.model, {k: v for k, v in batch.items() if k not in drop})
    total = anch.compute_loss(anch.model, {k: v for k, v in abatch.items() if k not in drop})
    kl = anch._anchor_kl[-1]
    assert kl > 1e-6  # the init adapter moved the model away from the base
    assert float(total) == pytest.approx(float(base) + 0.5 * kl, rel=1e-4)


def test_mva_scale_scales_the_noise(tiny_model_dir, init_adapter, tmp_path):
    from privinf.emulator import capture_sites

    cfg = _cfg(tiny_model_dir, init_adapter, tmp_path, mva="up:gaussian:0.5", perturb_layers=(0,))
    tr1, _ = _trainer(cfg, tmp_path)
    tr2, _ = _trainer(replace(cfg, mva_scale=1.1), tmp_path)
    assert tr2.provenance()["noise_per_layer_site"]["0:up"] == ["gaussian", pytest.approx(0.55)]
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    base = tr1.model.get_base_model()
    clean = capture_sites(base, ids, layers=[0], sites=("up",))[(0, "up")]
    deltas = []
    for tr in (tr1, tr2):
        with tr.perturbed(tr.model, seed=7):
            deltas.append(capture_sites(tr.model.get_base_model(), ids, layers=[0], sites=("up",))[(0, "up")] - clean)
    torch.testing.assert_close(deltas[1], 1.1 * deltas[0], rtol=1e-4, atol=1e-5)
    assert float(deltas[0].std()) == pytest.approx(0.5, rel=0.35)


def test_layers_all_perturbs_every_layer_and_both_sites_relative(tiny_model_dir, init_adapter, tmp_path):
    cfg = _cfg(tiny_model_dir, init_adapter, tmp_path, perturb_layers=None, relative=True)
    tr, batch = _trainer(cfg, tmp_path)
    _loss(tr, batch)
    assert set(tr.noise_calls) == {(0, "up"), (0, "down"), (1, "up"), (1, "down")}
    prov = tr.provenance()
    assert prov["layers"] == [0, 1] and prov["tau"] == "all" and prov["sites"] == ["up", "down"]
    # relative: each (layer, site) gets the MVA multiple of its clean std, measured on the init model
    assert prov["scale"] == "relative" and prov["site_std"]["1:down"] > 0
    assert prov["noise_per_layer_site"]["1:down"] == ["laplace", pytest.approx(0.3 * prov["site_std"]["1:down"])]


def test_cluster_weight_adds_exactly_lambda_times_the_term(tiny_model_dir, init_adapter, tmp_path):
    cfg = _cfg(tiny_model_dir, init_adapter, tmp_path)
    off, b0 = _trainer(replace(cfg, cluster_weight=0.0), tmp_path)
    on, b1 = _trainer(cfg, tmp_path)
    l0, l1 = float(_loss(off, b0)), float(_loss(on, b1))  # same seed, step and micro-batch: same noise
    term = on.last_terms["cluster"]
    assert 0 < term < 2 and off.last_terms["cluster"] == pytest.approx(term)
    assert l1 - l0 == pytest.approx(0.1 * term, rel=1e-4)
    assert l0 == pytest.approx(off.last_terms["dpo"] + cfg.sft_weight * off.last_terms["sft"], rel=1e-5)
    logged = on._metrics["train"]
    assert {"loss_dpo", "loss_sft", "loss_cluster"} <= set(logged)
    # the harmful flags survive the Trainer's column pruning into the batches it trains on
    loader_batch = next(iter(on.get_train_dataloader()))
    assert loader_batch["harmful"].tolist().count(True) == sum(r["kind"] == "harmful" for r in ROWS)
    # --cluster-tokens content: prompts in one template (shared prefix and suffix) give the same
    # term as before with the whole prompt, and a different one over the content alone
    templated = [dict(r, prompt=f"w1 w2 w3 {r['prompt']} w4 w5") for r in ROWS]
    terms = {}
    for tokens in ("prompt", "content"):
        tr, b = _trainer(replace(cfg, cluster_tokens=tokens), tmp_path, templated)
        _loss(tr, b)
        terms[tokens] = tr.last_terms["cluster"]
    assert 0 < terms["content"] < 2 and terms["content"] != pytest.approx(terms["prompt"])


# ------------------------------------------------------------------------------------------ CLI end to end


def test_align_quada_then_safety_compare_cli(tiny_model_dir, init_adapter, tmp_path):
    from privinf.cli import main

    res = CliRunner().invoke(main, [
        "align", "--method", "quada", "--model", str(tiny_model_dir), "--init", str(init_adapter),
        "--mva", "up:gaussian:0.3,down:laplace:0.2", "--layers", "0", "--cluster-tokens", "content", "--limit", "4", "--batch-size", "2",
        "--max-steps", "1", "--harmful-pairs", "4", "--output", str(tmp_path / "q"),
        "--answers", str(tmp_path / "answers.jsonl"), "--no-progress"])
    assert res.exit_code == 0, res.output
    pert = json.loads((tmp_path / "q" / "adapter" / "provenance.json").read_text())["perturbation"]
    assert pert["layers"] == [0] and pert["tau"] == 1 and pert["sites"] == ["up", "down"]
    assert pert["scale"] == "absolute" and pert["cluster_weight"] == 0.1 and pert["reference_passes"] >= 1
    assert pert["cluster_tokens"] == "content" and "minus the prefix" in pert["cluster_activation"]
    assert pert["noise_per_layer_site"] == {"0:up": ["gaussian", 0.3], "0:down": ["laplace", 0.2]}
    assert set(pert["hook_calls"]) == {"0:up", "0:down"}
    log = [json.loads(line) for line in (tmp_path / "q" / "log.jsonl").read_text().splitlines()]
    assert any({"loss_dpo", "loss_sft", "loss_cluster"} <= set(r) for r in log)

    common = ["--model", str(tiny_model_dir), "--mva", "up:gaussian:0.3", "--limit", "2", "--benign-limit", "2",
              "--ppl-tokens", "64", "--ppl-window", "16", "--max-new-tokens", "4", "--batch-size", "2",
              "--train-prompts", "", "--results", str(tmp_path / "res"), "--no-progress"]
    adapter = str(tmp_path / "q" / "adapter")
    res = CliRunner().invoke(main, ["safety", "compare", "--weights", "base=none", "--weights", f"quada={adapter}",
                                    "--cards", "bolt,teal-25", "--seeds", "0,1", *common])
    assert res.exit_code == 0, res.output
    out = tmp_path / "res" / "safety"
    data = json.loads((out / "compare-tiny-llama-base-quada.json").read_text())
    mva = "MVA up gaussian 0.3 L0-1"
    assert data["perturbations"] == ["clean", mva, "bolt", "teal-25"] and data["baseline"] == "quada"
    cells = {(c["weights"], c["perturbation"]): c for c in data["cells"]}
    assert len(cells) == 8
    assert cells[("base", mva)]["seeds"] == [0, 1] and cells[("base", "bolt")]["seeds"] == [0]
    assert cells[("base", mva)]["vs_clean"]["coherent_success"]["n"] == 4  # 2 prompts x 2 seeds, pooled
    assert cells[("base", mva)]["vs_baseline"]["ppl_ratio"] > 0
    assert cells[("base", mva)]["vs_baseline"]["strict_success"]["n"] == 4
    assert all(c["strict_asr"]["mean"] <= c["coherent_asr"]["mean"] for c in cells.values())
    assert cells[("quada", "clean")]["vs_baseline"]["ppl_ratio"] == pytest.approx(1.0)
    assert (out / "compare-tiny-llama-base-quada.png").stat().st_size > 0
    md = (out / "compare-tiny-llama-base-quada.md").read_text()
    assert all(w in md for w in ("McNemar", "strict ASR %", "strict vs quada clean"))
    # no perplexity measured (--ppl-tokens 0, e.g. a prompt set of its own): the plot has no PPL panel
    res = CliRunner().invoke(main, ["safety", "compare", "--weights", "base=none", "--weights", f"nop={adapter}",
                                    "--cards", "none", "--seeds", "0", *common, "--ppl-tokens", "0"])
    assert res.exit_code == 0, res.output
    assert (out / "compare-tiny-llama-base-nop.png").stat().st_size > 0

    # Table 5 under the MVA, labels as the paper's: every generation is already stored (same weights)
    store = out / "generations.jsonl"
    n_rows = len(store.read_text().splitlines())
    res = CliRunner().invoke(main, ["safety", "compare", "--ablations", "--weights", "NA=none",
                                    "--weights", f"MVA={adapter}", "--seeds", "0,1", *common])
    assert res.exit_code == 0, res.output
    assert len(store.read_text().splitlines()) == n_rows  # resumed from the store, nothing regenerated
    md = (out / "ablations-tiny-llama-na-mva.md").read_text()
    assert "61.84" in md and "0.19" in md
    # bench/record_evaluation.py writes those cells, with their command, into the adapter's provenance
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("rec", Path(__file__).parents[1] / "bench" / "record_evaluation.py")
    rec = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rec)
    table5 = str(out / "ablations-tiny-llama-na-mva.json")
    with pytest.raises(SystemExit):  # a number without the command that measured it is refused
        rec.main([adapter, "--label", "MVA", "--compare", f"ablations={table5}"])
    with pytest.raises(SystemExit, match="has MVA, NA"):
        rec.main([adapter, "--label", "LA", "--compare", f"ablations={table5}", "--command", "ablations=x"])
    rec.main([adapter, "--label", "MVA", "--compare", f"ablations={table5}", "--command", "ablations=privinf safety compare"])
    ev = json.loads((tmp_path / "q" / "adapter" / "provenance.json").read_text())["evaluation"]
    assert ev["command"] == {"ablations": "privinf safety compare"} and ev["references"] == {"ablations": table5}
    assert set(ev["ablations"]) == {"clean", mva} and "runs" not in ev["ablations"][mva]
    assert ev["ablations"][mva]["seeds"] == [0, 1] and ev["ablations"][mva]["vs_clean"]["coherent_success"]["n"] == 4

    res = CliRunner().invoke(main, ["safety", "compare", "--curves", "--curve-factors", "0.5,1", "--weights", "base=none",
                                    "--weights", f"quada={adapter}", "--seeds", "0", *common])
    assert res.exit_code == 0, res.output
    curves = json.loads((out / "curves-tiny-llama-base-quada.json").read_text())
    assert set(curves["sweeps"]["up"]) == {"base", "quada"}
    assert [p["scale"] for p in curves["sweeps"]["up"]["quada"]["points"]] == pytest.approx([0.15, 0.3])


def test_quada_and_compare_reject_bad_input_before_loading(init_adapter):
    from privinf.cli import main

    def run(*args):
        return CliRunner().invoke(main, list(args))

    r = run("align", "--method", "quada", "--init", str(init_adapter))
    assert r.exit_code == 2 and "--mva" in r.output
    r = run("align", "--method", "quada", "--init", str(init_adapter), "--mva", "up:gaussian:-1")
    assert r.exit_code == 2 and "--mva" in r.output
    r = run("align", "--method", "quada", "--init", str(init_adapter), "--mva", "middle:0.1")
    assert r.exit_code == 2 and "site" in r.output
    r = run("align", "--method", "quada", "--mva", "up:0.1")
    assert r.exit_code == 2 and "--init" in r.output
    r = run("align", "--method", "dpo", "--mva", "up:0.1")
    assert r.exit_code == 2 and "--method quada" in r.output
    quada = ("align", "--method", "quada", "--init", str(init_adapter))
    r = run(*quada, "--perturb", "card")
    assert r.exit_code == 2 and "--card" in r.output
    r = run(*quada, "--perturb", "card", "--card", "teal-25")
    assert r.exit_code == 2 and "sparsifying" in r.output
    r = run(*quada, "--perturb", "card", "--card", "nope")
    assert r.exit_code == 2 and "no protocol card" in r.output
    r = run(*quada, "--perturb", "card", "--card", "nexus", "--mva", "up:0.1")
    assert r.exit_code == 2 and "drop --mva" in r.output
    r = run(*quada, "--mva", "up:0.1", "--card", "nexus")
    assert r.exit_code == 2 and "--perturb card" in r.output
    r = run("safety", "compare", "--ablations")
    assert r.exit_code == 2 and "--mva" in r.output
    r = run("safety", "compare", "--weights", "a=none", "--weights", "a=none")
    assert r.exit_code == 2 and "twice" in r.output
    r = run("safety", "compare", "--weights", "a=none", "--baseline", "b")
    assert r.exit_code == 2 and "--baseline" in r.output


def test_mva_spec_from_text_and_from_the_mva_json(tmp_path):
    from privinf.errors import UsageError
    from privinf.safety import mvaspec
    from privinf.safety.config import RunConfig

    m = mvaspec.parse("down:0.03, up:gaussian:0.05")
    assert m.noise == (("up", "gaussian", 0.05), ("down", "laplace", 0.03)) and not m.relative
    assert m.scaled(1.1).spec() == "up:gaussian:0.055,down:laplace:0.033"
    cfgs = m.site_configs(RunConfig(), (0, 1))
    assert [(c.mode, c.sites, c.scale, c.layers) for c in cfgs] == [("gaussian", ("up",), 0.05, (0, 1)),
                                                                    ("laplace", ("down",), 0.03, (0, 1))]
    # the shape `privinf safety mva` writes (runner.mva): a site without a peak inside the PPL limit is skipped
    res = {"kind": "mva", "base": RunConfig(mode="gaussian", scale=0.5, relative=True).to_dict(),
           "sensitive_layers": [0, 2],
           "sites": {"up": {"sweep": {"base": {"mode": "gaussian"}}, "mva": {"coherent_peak_scale": 0.25}},
                     "down": {"sweep": {"base": {"mode": "laplace"}}, "mva": {"coherent_peak_scale": None}}}}
    (tmp_path / "mva.json").write_text(json.dumps(res))
    m = mvaspec.parse(str(tmp_path / "mva.json"))
    assert m.noise == (("up", "gaussian", 0.25),) and m.relative and m.layers == (0, 2)
    assert m.site() == ("up", "gaussian", 0.25)
    # two sites: one is picked by name, or by the higher peak coherent ASR the search measured
    res["sites"]["down"]["mva"] = {"coherent_peak_scale": 1.0, "coherent_peak_asr": 0.2}
    res["sites"]["up"]["mva"]["coherent_peak_asr"] = 0.1
    (tmp_path / "mva2.json").write_text(json.dumps(res))
    m2 = mvaspec.parse(str(tmp_path / "mva2.json"))
    assert m2.site() == ("down", "laplace", 1.0) and m2.site("up") == ("up", "gaussian", 0.25)
    with pytest.raises(UsageError, match="choose one with --mva-site"):
        mvaspec.parse("up:0.05,down:0.03").site()
    with pytest.raises(UsageError, match="no noise at that site"):
        m.site("down")
    (tmp_path / "bad.json").write_text(json.dumps({"kind": "sweep"}))
    with pytest.raises(UsageError, match="not an MVA result"):
        mvaspec.parse(str(tmp_path / "bad.json"))
