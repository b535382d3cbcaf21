"""Writes that can't be half-done: a priced catalog written over its own input, a checkpoint, a
file or folder replaced while the disk fills, each leaves the old one whole and no temporary
behind. (An export that fails halfway: `test_password_shapes`, on a real study.)"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from pricer.atomic import replacing, replacing_folder, write_text


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or ".partial" in p.name)


def test_a_file_replaced_while_the_disk_fills_stays_as_it_was(tmp_path: Path) -> None:
    path = write_text(tmp_path / "page.html", "old")
    with pytest.raises(OSError, match="No space"), replacing(path) as tmp:
        tmp.write_text("half of the new")
        _full_disk()
    assert path.read_text() == "old" and _hidden(tmp_path) == []
    write_text(path, "new")
    assert path.read_text() == "new" and _hidden(tmp_path) == []


def test_a_folder_replaced_while_the_disk_fills_stays_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "export"
    with replacing_folder(out) as staged:
        (staged / "a.txt").write_text("old a")
        (staged / "b.txt").write_text("old b")
    with pytest.raises(OSError, match="No space"), replacing_folder(out) as staged:
        (staged / "a.txt").write_text("new a")
        _full_disk()
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"] and (out / "a.txt").read_text() == "old a"
    with replacing_folder(out) as staged:
        (staged / "c.txt").write_text("new c")
    assert [p.name for p in out.iterdir()] == ["c.txt"] and _hidden(tmp_path) == []


def test_a_priced_catalog_written_over_its_input_keeps_the_input_when_writing_fails(
        ensemble_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import pricer.data.tables as tables
    from sweeps.cli.main import main

    catalog = tmp_path / "catalog.csv"
    catalog.write_text("title,description\nStainless steel kettle,1.7 litre 1500 W\n"
                       "Cordless drill,18 V two batteries\nGarden hose,50 ft expandable\n")
    original = catalog.read_bytes()
    written = []
    real_cell = tables._cell

    def fill_after_one_row(value):
        written.append(value)
        if len(written) > 4:  # the disk fills during the second row
            _full_disk()
        return real_cell(value)

    with monkeypatch.context() as patched:
        patched.setattr(tables, "_cell", fill_after_one_row)
        with pytest.raises(OSError, match="No space"):
            main(["predict", "--adapter", str(ensemble_folder), "--input", str(catalog), "--out", str(catalog)])
    assert catalog.read_bytes() == original and _hidden(tmp_path) == []

    assert main(["predict", "--adapter", str(ensemble_folder), "--input", str(catalog), "--out", str(catalog)]) == 0
    lines = catalog.read_text().splitlines()
    assert len(lines) == 4 and tables.PREDICTED in lines[0]


def test_a_checkpoint_that_fails_to_write_leaves_the_last_one_and_no_partial(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import torch
    from peft import LoraConfig, get_peft_model

    from pricer.train.checkpoint import FILE, save_checkpoint

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.proj(x)

    model = get_peft_model(Tiny(), LoraConfig(r=2, target_modules=["proj"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    run = SimpleNamespace(config=SimpleNamespace(to_dict=dict), model=model, optimizer=optimizer,
                          scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0))

    def fit(steps: int) -> SimpleNamespace:
        return SimpleNamespace(steps=steps, losses=[], val_curve=[], tokens=0, seconds=0.0)

    folder = tmp_path / "checkpoint"
    save_checkpoint(run, fit(2), folder)
    (folder / f"{FILE}.partial-999-1").write_bytes(b"what a killed writer left")
    real_save = torch.save

    def fills(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"torn")
        _full_disk()

    with monkeypatch.context() as patched:
        patched.setattr(torch, "save", fills)
        with pytest.raises(OSError, match="No space"):
            save_checkpoint(run, fit(4), folder)
    assert torch.load(folder / FILE, weights_only=True)["step"] == 2
    assert sorted(p.name for p in folder.iterdir()) == [FILE]
    assert torch.save is real_save
