"""A trainer's log step is one line (RunLog's structlog line), not also a printed dict and a bar."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from planner.logs import configure_logging


def test_each_logging_step_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from training.trainer_common import RunLog

    class Tiny(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def forward(self, x: Any, y: Any) -> dict[str, Any]:
            return {"loss": ((self.w(x).squeeze(-1) - y) ** 2).mean()}

    rows = [{"x": [float(i), 1.0], "y": float(i % 2)} for i in range(8)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        logging_steps=1,
        per_device_train_batch_size=2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,  # as trainer_common.common_args
        remove_unused_columns=False,
    )

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        return {k: torch.tensor([r[k] for r in batch]) for k in ("x", "y")}

    log = io.StringIO()
    configure_logging("console", "info", stream=log)
    trainer = transformers.Trainer(model=Tiny(), args=args, train_dataset=rows, data_collator=collate)
    run = RunLog("sft")
    run.attach(trainer)
    trainer.train()
    printed = capsys.readouterr()
    assert "'loss'" not in printed.out + printed.err  # no dict printed by transformers
    assert "it/s" not in printed.out + printed.err  # no tqdm bar
    lines = log.getvalue().splitlines()
    steps = [line for line in lines if "sft.log" in line and "loss=" in line and "train_loss" not in line]
    assert len(steps) == 3 and all("of=3" in line for line in steps)
    assert [r["step"] for r in run.records if "loss" in r] == [1, 2, 3]
