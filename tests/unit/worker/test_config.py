"""Configuration: defaults < file < environment < flags, with clear errors."""

from pathlib import Path

import pytest

from torchkafka.worker._config import load_config, static_membership
from torchkafka.worker._errors import StartupError

REQUIRED = {
    "model": "torchvision:resnet18",
    "input_topic": "in",
    "output_topic": "out",
    "dead_letter_topic": "dlq",
}


def test_precedence_is_file_then_environment_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "worker.toml"
    file.write_text(
        'max_batch_size = 8\nmax_wait_ms = 2.5\ngroup_id = "from-file"\n'
        '[consumer]\n"fetch.min.bytes" = "1"\n"session.timeout.ms" = "9000"\n'
    )
    environ = {"TORCHKAFKA_MAX_BATCH_SIZE": "16", "TORCHKAFKA_GROUP_ID": "from-env"}
    flags = {**REQUIRED, "group_id": "from-flag", "consumer": {"session.timeout.ms": "7000"}}
    config = load_config(file, environ, flags)
    assert config.max_batch_size == 16  # environment beats the file
    assert config.max_wait_ms == 2.5  # only in the file
    assert config.group_id == "from-flag"  # flags beat everything
    assert config.consumer == {"fetch.min.bytes": "1", "session.timeout.ms": "7000"}


def test_plain_kafka_and_redis_variables_are_honoured() -> None:
    environ = {"KAFKA_BOOTSTRAP": "broker:9093", "REDIS_URL": "redis://cache:6380/1"}
    config = load_config(None, environ, REQUIRED)
    assert (config.bootstrap, config.redis_url) == ("broker:9093", "redis://cache:6380/1")


def test_the_redis_password_is_masked_when_printed() -> None:
    config = load_config(None, {"REDIS_URL": "redis://user:s3cret@cache:6379/0"}, REQUIRED)
    assert "s3cret" not in repr(config)
    assert "redis://user:***@cache:6379/0" in repr(config)


def test_missing_settings_are_named_with_their_flags() -> None:
    with pytest.raises(StartupError, match=r"model \(--model\), input_topic \(--input-topic\)"):
        load_config(None, {}, {})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TORCHKAFKA_MAX_BATCH_SIZE": "lots"}, "max_batch_size: cannot use 'lots'"),
        ({"TORCHKAFKA_MAX_BATCH_SIZE": "0"}, "max_batch_size must be >= 1"),
        ({"TORCHKAFKA_REDIS_OUTAGE": "ignore"}, "redis_outage must be"),
        ({"TORCHKAFKA_METRICS_PORT": "65536"}, "metrics_port must be 0 .off. to 65535"),
        (
            {"TORCHKAFKA_METRICS_PORT": "65535", "TORCHKAFKA_WORKERS": "2"},
            "metrics_port must be 0 .off. to 65534 .one port per worker.",
        ),
    ],
)
def test_bad_values_are_startup_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(StartupError, match=message):
        load_config(None, environ, REQUIRED)


def test_a_config_file_with_unknown_keys_or_bad_toml_is_refused(tmp_path: Path) -> None:
    typo = tmp_path / "typo.toml"
    typo.write_text("max_batch_sise = 8\n")
    with pytest.raises(StartupError, match="unknown keys"):
        load_config(typo, {}, REQUIRED)
    broken = tmp_path / "broken.toml"
    broken.write_text("max_batch_size = \n")
    with pytest.raises(StartupError, match="not valid TOML"):
        load_config(broken, {}, REQUIRED)
    with pytest.raises(StartupError, match="cannot read config file"):
        load_config(tmp_path / "absent.toml", {}, REQUIRED)


def test_model_runtime_settings_come_from_strings_and_toml(tmp_path: Path) -> None:
    file = tmp_path / "worker.toml"
    file.write_text('batch_buckets = [1, 8, 32]\ninput_shape = [3, 64, 64]\nbackend = "compile"\n')
    environ = {"TORCHKAFKA_CHANNELS_LAST": "yes", "TORCHKAFKA_PRECISION": "bf16"}
    config = load_config(file, environ, {**REQUIRED, "cuda_graphs": "false"})
    assert config.batch_buckets == (1, 8, 32)
    assert config.input_shape == (3, 64, 64)
    assert (config.backend, config.precision) == ("compile", "bf16")
    assert config.channels_last is True
    assert config.cuda_graphs is False
    flags = {**REQUIRED, "batch_buckets": "4,16", "max_batch_size": 16, "input_shape": "8"}
    assert load_config(None, {}, flags).batch_buckets == (4, 16)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backend": "onnx"}, "backend must be one of eager, torchscript, compile"),
        ({"precision": "fp8"}, "precision must be one of fp32, fp16, bf16"),
        ({"channels_last": "maybe"}, "channels_last: cannot use 'maybe'"),
        ({"batch_buckets": "1,8,64"}, r"largest batch bucket \(64\) must equal max_batch_size"),
        ({"batch_buckets": "0,32"}, "batch_buckets must be >= 1"),
        ({"model_watch_s": "-1"}, "model_watch_s must be >= 0"),
        ({"shutdown_redis_wait_s": "-0.5"}, "shutdown_redis_wait_s must be >= 0"),
        ({"input_shape": "3,0"}, "input_shape dimensions must be >= 1"),
    ],
)
def test_bad_model_runtime_settings_are_startup_errors(
    settings: dict[str, str], message: str
) -> None:
    with pytest.raises(StartupError, match=message):
        load_config(None, {}, {**REQUIRED, **settings})


def test_static_membership_gives_each_worker_process_its_own_instance_id() -> None:
    assert static_membership(load_config(None, {}, REQUIRED), 0) == {}
    config = load_config(None, {"TORCHKAFKA_GROUP_INSTANCE_ID": "node-a"}, REQUIRED)
    assert static_membership(config, 0) == {"group.instance.id": "node-a-0"}
    assert static_membership(config, 3) == {"group.instance.id": "node-a-3"}
