import pytest

from whisper_cpu import UserError
from whisper_cpu.bench import cli, inputs, publish, results, step, tables


def test_operators_are_sorted_into_the_parts_of_a_token():
    assert step.kind("quantized::linear_dynamic", [[1, 1, 384], [], []]) == "products"
    assert step.kind("quantized::linear_dynamic_fp16", [[8, 1, 384], []]) == "products"  # a batch of 8 windows' tokens
    assert step.kind("quantized::linear_dynamic", [[1, 1500, 384], [], []]) == "audio_keys"
    assert step.kind("aten::addmm", [[1500, 384], [384, 768]]) == "audio_keys"
    assert step.kind("aten::bmm", [[6, 1, 64], [6, 64, 1500]]) == step.kind("aten::_softmax", []) == "attention"
    assert step.kind("aten::_scaled_dot_product_flash_attention_for_cpu", []) == "attention"
    assert step.kind("aten::native_layer_norm", []) == "norms"
    assert step.kind("aten::_log_softmax", []) == step.kind("aten::argmax", []) == "logits"
    assert step.kind("aten::gelu", []) == "other_ops"


def test_a_token_is_timed_and_split_into_its_parts(scratch, mirror):
    rows = step.measure(("tiny.en",), ("fast-fp16w", "fp32"), threads=2, repeats=1, log=lambda line: None)
    assert [r["method"] for r in rows] == ["fast-fp16w", "fp32"] and {r["audio_id"] for r in rows} == {inputs.window().id}
    ours, plain = rows
    assert ours["tokens"] == plain["tokens"] > 50  # fp16 weights: fp32's tokens, the whole window's
    for row in rows:
        parts = [row[f"{k}_ms"] for k in (*step.KINDS, "python")]
        assert all(p >= 0 for p in parts) and row["products_ms"] > 0 and row["audio_keys_ms"] > 0 and row["attention_ms"] > 0
        assert sum(parts) >= row["ms_per_token"] - 0.01  # what the operators leave is Python's, never negative
    assert ours["ms_per_token"] < plain["ms_per_token"]  # openai-whisper's loop against our step, same arithmetic
    saved = results.read("steps")
    assert len(saved) == 2 and list(tables.steps_table(saved).method) == ["fast-fp16w", "fp32"]
    assert f"run `{rows[0]['run_id']}`" in publish.steps_markdown()


def test_the_step_command_refuses_an_unknown_method_before_loading(scratch):
    with pytest.raises(UserError, match="unknown method 'nope'"):
        cli.cmd_step(type("Args", (), {"methods": ["nope"], "models": ["tiny.en"], "threads": 1, "repeats": 1})())


def test_ms_per_token_divides_each_repeats_time_by_its_own_tokens():
    """A peer's fallback can decode the window again in one repeat and not the next: a median time over the first
    repeat's tokens came out ten times too fast (whisper.cpp's tiny.en at 0.22 ms)."""
    class Runner:
        splits = iter([(0.1, 9.0, 900), (0.1, 9.0, 900), (0.1, 0.1, 100), (0.1, 0.2, 100), (0.1, 0.3, 100), (0.1, 0.15, 100)])

        def split_times(self, samples, options):
            return next(self.splits)

    assert step.per_token(Runner(), None, None, repeats=5) == {"tokens": 100, "ms_per_token": 2.0}
