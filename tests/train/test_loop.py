"""Training: loss goes down, schedule, kill-and-resume is bit-identical, DDP on gloo."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from circuits.model.checkpoint import read_metadata
from circuits.config import TrainConfig
from circuits.train.loop import lr_at, snapshot_steps, train
from circuits.train.log import eval_rows, read_log


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig(batch_size=1, total_tokens=1, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_snapshots_are_log_spaced():
    steps = snapshot_steps(6400, 7)
    assert steps[0] == 100 and steps[-1] == 6400
    ratios = np.diff(np.log(steps))
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-2)


def test_training_lowers_loss_and_logs(tmp_path, tiny_cfg, tiny_train_cfg, markov_splits):
    train(tiny_cfg, tiny_train_cfg, markov_splits, tmp_path, progress=False)
    rows = eval_rows(read_log(tmp_path / "log.jsonl"))
    assert rows[-1]["step"] == 30 and rows[-1]["tokens"] == 30 * 8 * 24
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.3
    assert len(rows[-1]["prefix_matching"]) == tiny_cfg.n_layers
    assert (tmp_path / "model.safetensors").exists()
    assert len(list((tmp_path / "snapshots").iterdir())) == 3


def test_training_is_deterministic(tmp_path, tiny_cfg, tiny_train_cfg, markov_splits):
    cfg = dataclasses.replace(tiny_train_cfg, total_tokens=8 * 24 * 6)
    a = train(tiny_cfg, cfg, markov_splits, tmp_path / "a", progress=False)
    b = train(tiny_cfg, cfg, markov_splits, tmp_path / "b", progress=False)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys, numpy as np
    import circuits.train.loop as T
    from circuits.config import ModelConfig, TrainConfig, from_json
    model_cfg = from_json(ModelConfig, sys.argv[2]); train_cfg = from_json(TrainConfig, sys.argv[3])
    splits = {k: np.load(sys.argv[4] + f"/{k}.npy") for k in ("train", "validation")}
    original = T.save_resume
    def save_then_die(path, model, opt, *args):
        original(path, model, opt, *args)
        if args[-1]["step"] == 15:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, as a crash or kill -9
    T.save_resume = save_then_die
    T.train(model_cfg, train_cfg, splits, sys.argv[1], progress=False)
""")


def test_killed_run_resumes_bit_identical(tmp_path, tiny_cfg, tiny_train_cfg, markov_splits):
    """A run killed after its step-15 checkpoint and resumed equals a straight run, bit for bit. In fp32:
    torch's bf16 CPU kernels round differently now and then when another process competes for the cores
    (3 of 60 fresh runs of this model differed under a busy loop, 0 of 60 in fp32; README), and the child
    here runs beside this process's idle threads, so in bf16 the test failed about 1 time in 20."""
    from circuits.config import to_json
    tiny_train_cfg = dataclasses.replace(tiny_train_cfg, precision="fp32")
    for k, v in markov_splits.items():
        np.save(tmp_path / f"{k}.npy", v)
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(killed), to_json(tiny_cfg),
                           to_json(tiny_train_cfg), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert not (killed / "model.safetensors").exists()
    assert read_metadata(killed / "checkpoint.safetensors")["state"]["step"] == 15
    assert max(r["step"] for r in read_log(killed / "log.jsonl")) <= 15
    resumed = train(tiny_cfg, tiny_train_cfg, markov_splits, killed, progress=False)
    whole = train(tiny_cfg, tiny_train_cfg, markov_splits, tmp_path / "whole", progress=False)
    for (name, x), y in zip(resumed.state_dict().items(), whole.state_dict().values()):
        assert torch.equal(x, y), f"{name} differs after resume"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]
    assert strip(read_log(killed / "log.jsonl")) == strip(read_log(tmp_path / "whole" / "log.jsonl"))


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tmp_path, tiny_cfg, tiny_train_cfg,
                                                                   markov_splits, monkeypatch):
    """A NaN loss at step 18 stops the run with an error naming the step and the value; the step-15 checkpoint
    is left as it was, and resuming from it finishes the run as if nothing had happened (fp32: bit for bit)."""
    from circuits.model.transformer import AttnOnlyTransformer
    from circuits.train.loop import TrainingDiverged

    cfg = dataclasses.replace(tiny_train_cfg, precision="fp32")
    run = tmp_path / "run"
    train(tiny_cfg, cfg, markov_splits, run, progress=False, stop_at_step=15)
    checkpoint = run / "checkpoint.safetensors"
    before = checkpoint.read_bytes()
    forward, calls = AttnOnlyTransformer.forward, []

    def poisoned(self, tokens, targets=None):
        out = forward(self, tokens, targets)
        if targets is not None:  # a training step (evaluations pass no targets)
            calls.append(1)
            if len(calls) == 3:  # steps 16, 17, 18 after the resume
                return out * float("nan")
        return out

    monkeypatch.setattr(AttnOnlyTransformer, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 18: the loss is nan"):
        train(tiny_cfg, cfg, markov_splits, run, progress=False)
    assert checkpoint.read_bytes() == before and not (run / "model.safetensors").exists()
    monkeypatch.setattr(AttnOnlyTransformer, "forward", forward)
    resumed = train(tiny_cfg, cfg, markov_splits, run, progress=False)
    whole = train(tiny_cfg, cfg, markov_splits, tmp_path / "whole", progress=False)
    for (name, x), y in zip(resumed.state_dict().items(), whole.state_dict().values()):
        assert torch.equal(x, y), f"{name} differs after the resume"


def test_an_infinite_gradient_is_caught_too(tmp_path, tiny_cfg, tiny_train_cfg, markov_splits, monkeypatch):
    from circuits.train import loop

    def infinite_norm(parameters, max_norm):
        return torch.tensor(float("inf"))
    monkeypatch.setattr(loop.torch.nn.utils, "clip_grad_norm_", infinite_norm)
    with pytest.raises(loop.TrainingDiverged, match=r"step 1: the loss is [0-9.]+ and the gradient norm inf"):
        train(tiny_cfg, tiny_train_cfg, markov_splits, tmp_path, progress=False)


def test_resume_with_another_config_is_refused(tmp_path, tiny_cfg, tiny_train_cfg, markov_splits):
    short = dataclasses.replace(tiny_train_cfg, total_tokens=8 * 24 * 5)
    train(tiny_cfg, short, markov_splits, tmp_path, progress=False)
    with pytest.raises(ValueError, match="written by another configuration"):
        train(tiny_cfg, dataclasses.replace(short, lr=0.5), markov_splits, tmp_path, progress=False)


def test_too_little_data_is_named(tmp_path, tiny_cfg, tiny_train_cfg):
    splits = {"train": np.zeros(10, dtype=np.uint16), "validation": np.zeros(10, dtype=np.uint16)}
    with pytest.raises(ValueError, match="train split has 10 tokens"):
        train(tiny_cfg, tiny_train_cfg, splits, tmp_path, progress=False)


def test_tokens_beyond_the_vocabulary_are_named(tmp_path, tiny_cfg, tiny_train_cfg, markov_splits):
    splits = dict(markov_splits, validation=np.full(500, tiny_cfg.d_vocab, dtype=np.uint16))
    with pytest.raises(ValueError, match=f"validation split holds token id {tiny_cfg.d_vocab} but the vocabulary"):
        train(tiny_cfg, tiny_train_cfg, splits, tmp_path, progress=False)
    assert not (tmp_path / "log.jsonl").exists()  # refused before anything was written


DDP_RUN = textwrap.dedent("""
    import sys, numpy as np, torch, torch.distributed as dist
    from circuits.config import ModelConfig, TrainConfig, from_json
    from circuits.train.loop import train
    model_cfg = from_json(ModelConfig, sys.argv[2]); train_cfg = from_json(TrainConfig, sys.argv[3])
    splits = {k: np.load(sys.argv[4] + f"/{k}.npy") for k in ("train", "validation")}
    model = train(model_cfg, train_cfg, splits, sys.argv[1], progress=False)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    assert all(torch.equal(gathered[0], g) for g in gathered), "ranks diverged"
    # one file per rank: two processes printing to one pipe can interleave their lines
    open(f"{sys.argv[1]}/ok_rank{dist.get_rank()}_of{dist.get_world_size()}", "w").close()
    dist.destroy_process_group()
""")


@pytest.mark.parametrize("nproc", [1, 2])
def test_ddp_under_torchrun_on_gloo(tmp_path, tiny_cfg, tiny_train_cfg, markov_splits, nproc):
    """torchrun with one process joins a process group too (DDP on one GPU runs the code path of eight)."""
    from circuits.config import to_json
    for k, v in markov_splits.items():
        np.save(tmp_path / f"{k}.npy", v)
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_RUN)
    # no GPU, so gloo on a GPU box too (two ranks cannot share one GPU under NCCL)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           str(script), str(tmp_path / "run"), to_json(tiny_cfg), to_json(tiny_train_cfg),
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run").glob("ok_rank*")) == [f"ok_rank{r}_of{nproc}" for r in range(nproc)]
    rows = eval_rows(read_log(tmp_path / "run" / "log.jsonl"))
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.3
    assert set(load_file(str(tmp_path / "run" / "model.safetensors"))) >= {"embed.W_E", "unembed.W_U"}


def test_more_ranks_than_gpus_is_named(monkeypatch):
    from circuits.train.setup import pick_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ValueError, match="local rank 1 has no GPU: this node has 1"):
        pick_device(1)


def test_the_log_records_which_data_trained_the_model(tmp_path, tiny_cfg, tiny_train_cfg, markov_splits):
    from circuits.config import DataConfig
    from circuits.train.loop import data_label

    cfg = dataclasses.replace(tiny_train_cfg, total_tokens=8 * 24 * 10)
    train(tiny_cfg, cfg, markov_splits, tmp_path, data_cfg=DataConfig("openwebtext", "gpt2", "/data/owt"),
          progress=False)
    assert eval_rows(read_log(tmp_path / "log.jsonl"))[-1]["data"] == "openwebtext (/data/owt), gpt2"
    assert data_label(DataConfig("embedded", "bpe4k")) == "embedded, bpe4k" and data_label(None) is None
