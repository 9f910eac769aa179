"""The GPU check's pure parts: verification, percentiles, rates, the table, its arguments."""

import threading

import pytest
import torch
from e2e_harness import ReadResult, on_own_thread, result_rate
from gpu_check import (
    VARIANTS,
    Reference,
    Row,
    Variant,
    availability,
    format_table,
    parse_args,
    percentile,
    verify,
)

from torchkafka.codecs import ModelInfo, Result

MODEL = ModelInfo("resnet18", "test")
# Two pool inputs: a clear winner, and a near-tie between classes 3 and 4.
REFERENCE = Reference(
    indices=torch.tensor([[1, 2, 0], [3, 4, 0]]),
    probs=torch.tensor([[0.6, 0.3, 0.1], [0.40, 0.395, 0.205]]),
)


def result(request_id: str, indices: list[int], probs: list[float]) -> Result:
    return Result(
        request_id, {"indices": torch.tensor(indices), "probs": torch.tensor(probs)}, MODEL
    )


def test_verify_passes_results_within_tolerance_and_exempts_near_ties() -> None:
    results = [
        result("run-0", [1, 2, 0], [0.601, 0.299, 0.1]),
        result("run-paced-3", [4, 3, 0], [0.399, 0.396, 0.205]),  # input 1: swapped near-tie
    ]
    verdict = verify(results, REFERENCE, atol=2e-2)
    assert verdict.ok
    assert (verdict.checked, verdict.agree, verdict.exempt) == (2, 1, 1)
    assert verdict.max_prob_diff == pytest.approx(1e-3, abs=1e-6)
    assert "near-ties" in verdict.summary()


def test_verify_fails_a_clear_top1_change_or_drifting_probabilities() -> None:
    swapped = verify([result("run-2", [2, 1, 0], [0.6, 0.3, 0.1])], REFERENCE, atol=2e-2)
    assert not swapped.ok
    assert swapped.agree == 0
    drifted = verify([result("run-0", [1, 2, 0], [0.5, 0.3, 0.2])], REFERENCE, atol=2e-2)
    assert not drifted.ok
    assert drifted.max_prob_diff == pytest.approx(0.1)
    assert not verify([], REFERENCE, atol=2e-2).ok


def test_verify_fails_outputs_of_another_shape() -> None:
    verdict = verify([result("run-0", [1, 2], [0.6, 0.3])], REFERENCE, atol=2e-2)
    assert not verdict.ok


def test_reference_maps_request_ids_to_pool_inputs() -> None:
    assert REFERENCE.input_of("torchkafka.gpucheck.eager-fp32.ab12-7") == 1
    assert REFERENCE.input_of("torchkafka.gpucheck.eager-fp32.ab12-paced-10") == 0


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_result_rate_does_not_count_the_first_batch() -> None:
    stamps = [1000] * 8 + [1500] * 8 + [2000] * 8  # three batches of 8, 0.5 s apart
    results = [ReadResult(result(f"r-{i}", [0], [1.0]), t) for i, t in enumerate(stamps)]
    assert result_rate(results) == pytest.approx(16.0)


def test_format_table_shows_measurements_ratios_and_verdicts() -> None:
    rows = [
        Row("eager-fp32", 32, "PASS", "top-1 9/9", 1000.0, 4000.0, 3.0, 9.5, 20.0, 2.0),
        Row("tensorrt-fp16", 32, "SKIP", "torch_tensorrt is not importable here"),
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].split()[:3] == ["variant", "batch", "e2e"]
    assert lines[2].split() == [
        *("eager-fp32", "32", "1000", "4000", "0.250", "3.0", "9.5", "20.0", "3.0%", "PASS")
    ]
    assert lines[3].split() == ["tensorrt-fp16", "32", *["-"] * 7, "SKIP"]
    assert "tensorrt-fp16: SKIP torch_tensorrt is not importable here" in lines[-1]


def test_parse_args_quick_cpu_defaults_and_unknown_variants(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = parse_args(["--device", "cpu", "--quick"])
    assert (settings.batch, settings.count, settings.pool) == (8, 48, 16)
    assert settings.variants == ("eager-fp32", "torchscript-fp32")
    gpu = parse_args([])
    assert gpu.device == "cuda"
    assert gpu.batch == 32
    assert "compile-fp16-graphs" in gpu.variants
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--variants", "eager-fp32,warp-drive"])
    assert exit_info.value.code == 2
    assert "warp-drive" in capsys.readouterr().err


def test_availability_names_what_is_missing() -> None:
    cpu = torch.device("cpu")
    assert availability(VARIANTS["eager-fp32"], cpu) is None
    assert availability(Variant("graphs", "eager", "fp32", cuda_graphs=True), cpu) == "needs CUDA"
    reason = availability(VARIANTS["tensorrt-fp16"], cpu)
    assert reason is not None
    assert VARIANTS["compile-fp16-graphs"].static
    assert not VARIANTS["eager-fp16"].static


def test_on_own_thread_returns_or_raises_on_the_caller() -> None:
    caller = threading.get_ident()
    assert on_own_thread(lambda: threading.get_ident()) != caller
    with pytest.raises(ZeroDivisionError):
        on_own_thread(lambda: 1 // 0)
