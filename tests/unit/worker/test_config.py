"""Configuration: sections, defaults < file < environment < flags, typed, secrets kept secret."""

from pathlib import Path

import pytest

from torchkafka.worker import StartupError
from torchkafka.worker.config import (
    SETTINGS,
    Secret,
    group_membership,
    load_config,
    load_connection,
)
from torchkafka.worker.config._sections import Timeouts

REQUIRED = {
    "model": "torchvision:resnet18",
    "input_topic": "in",
    "output_topic": "out",
    "dead_letter_topic": "dlq",
}
PLANTED = "pl4nted-s3cret"


def test_precedence_is_file_then_environment_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "worker.toml"
    file.write_text(
        'max_batch_size = 8\nmax_wait_ms = 2.5\ngroup_id = "from-file"\n'
        '[consumer]\n"fetch.min.bytes" = "1"\n"session.timeout.ms" = "9000"\n'
    )
    environ = {"TORCHKAFKA_MAX_BATCH_SIZE": "16", "TORCHKAFKA_GROUP_ID": "from-env"}
    flags = {**REQUIRED, "group_id": "from-flag", "consumer": {"session.timeout.ms": "7000"}}
    config = load_config(file, environ, flags)
    assert config.model.max_batch_size == 16  # environment beats the file
    assert config.batching.max_wait_ms == 2.5  # only in the file
    assert config.group_id == "from-flag"  # flags beat everything
    assert config.kafka.consumer == {"fetch.min.bytes": "1", "session.timeout.ms": "7000"}


def test_a_config_file_may_group_settings_by_section(tmp_path: Path) -> None:
    file = tmp_path / "worker.toml"
    file.write_text(
        '[model]\nmodel = "torchscript:m.pt"\nmax_batch_size = 4\n'
        "[batching]\npoll_batch = 64\n"
        '[kafka]\nbootstrap = "b:9092"\n[kafka.client]\n"socket.keepalive.enable" = "true"\n'
        '[dedup]\ndedup_namespace = "orders"\n'
    )
    config = load_config(file, {}, {**REQUIRED, "model": None})
    assert config.model.spec == "torchscript:m.pt"
    assert config.model.max_batch_size == 4
    assert config.batching.poll_batch == 64
    assert config.kafka.librdkafka()["socket.keepalive.enable"] == "true"
    assert config.dedup_namespace == "orders"


def test_a_setting_in_the_wrong_section_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "worker.toml"
    file.write_text("[batching]\nmax_batch_size = 4\n")
    with pytest.raises(StartupError, match=r"unknown keys \['batching.max_batch_size'\]"):
        load_config(file, {}, REQUIRED)


def test_every_setting_has_one_name_help_and_a_parser() -> None:
    assert len(SETTINGS) == len({s.name for s in SETTINGS.values()})
    for setting in SETTINGS.values():
        assert setting.help, setting.name
    config = load_config(None, {}, REQUIRED)  # every default parses and validates
    assert config.model.spec == "torchvision:resnet18"


def test_plain_kafka_and_redis_variables_are_honoured() -> None:
    environ = {"KAFKA_BOOTSTRAP": "broker:9093", "REDIS_URL": "redis://cache:6380/1"}
    config = load_config(None, environ, REQUIRED)
    assert (config.kafka.bootstrap, config.dedup.redis_url) == (
        "broker:9093",
        "redis://cache:6380/1",
    )


def test_one_connection_gives_every_client_its_security_settings(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    password_file = tmp_path / "sasl-password"
    password_file.write_text(PLANTED + "\n")
    flags = {
        "bootstrap": "b:9094",
        "security_protocol": "sasl_ssl",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_username": "svc",
        "sasl_password_file": str(password_file),
        "ssl_ca_location": str(ca),
        "client": {"client.rack": "r1"},
    }
    connection = load_connection(None, {}, flags)
    assert connection.librdkafka() == {
        "bootstrap.servers": "b:9094",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "svc",
        "sasl.password": PLANTED,
        "ssl.ca.location": str(ca),
        "client.rack": "r1",
    }
    assert load_config(None, {}, {**REQUIRED, **flags}).kafka == connection


def test_sasl_without_credentials_or_tls_without_its_files_is_a_startup_error() -> None:
    with pytest.raises(StartupError, match="sasl_ssl needs sasl_username and sasl_password"):
        load_connection(None, {}, {"security_protocol": "sasl_ssl", "sasl_username": "svc"})
    with pytest.raises(StartupError, match=r"ssl_ca_location: /nowhere/ca\.pem is not a file"):
        load_connection(None, {}, {"ssl_ca_location": "/nowhere/ca.pem"})


def test_secrets_never_show_in_reprs_or_errors(tmp_path: Path) -> None:
    environ = {
        "TORCHKAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "TORCHKAFKA_SASL_USERNAME": "svc",
        "TORCHKAFKA_SASL_PASSWORD": PLANTED,
        "TORCHKAFKA_SSL_KEY_PASSWORD": PLANTED,
        "TORCHKAFKA_REDIS_PASSWORD": PLANTED,
        "REDIS_URL": f"redis://user:{PLANTED}@cache:6379/0",
    }
    config = load_config(None, environ, REQUIRED)
    assert config.kafka.sasl_password == Secret(PLANTED)
    for shown in (repr(config), str(config), repr(config.kafka), repr(config.dedup)):
        assert PLANTED not in shown
    assert "redis://user:***@cache:6379/0" in repr(config)
    with pytest.raises(StartupError) as refused:
        load_config(None, {**environ, "TORCHKAFKA_SECURITY_PROTOCOL": "sasl_tls"}, REQUIRED)
    assert PLANTED not in str(refused.value)


def test_a_secret_file_that_cannot_be_read_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="redis_password_file: cannot read /nowhere/pw"):
        load_config(None, {"TORCHKAFKA_REDIS_PASSWORD_FILE": "/nowhere/pw"}, REQUIRED)


def test_the_dedup_namespace_survives_a_new_model_version() -> None:
    v1 = load_config(None, {}, {**REQUIRED, "model": "torchscript:/models/model-v1.pt"})
    v2 = load_config(None, {}, {**REQUIRED, "model": "torchscript:/models/model-v2.pt"})
    assert v1.dedup_namespace == v2.dedup_namespace == "torchkafka:out"
    named = load_config(None, {"TORCHKAFKA_DEDUP_NAMESPACE": "orders"}, REQUIRED)
    assert named.dedup_namespace == "orders"


def test_stopping_timeouts_come_from_one_budget_and_nest() -> None:
    config = load_config(None, {"TORCHKAFKA_SHUTDOWN_TIMEOUT_S": "20"}, REQUIRED)
    timeouts = config.timeouts
    assert timeouts == Timeouts.derive(20.0, config.dedup.shutdown_redis_wait_s)
    assert timeouts.drain_s + timeouts.redis_wait_s < timeouts.stop_grace_s < timeouts.liveness_s


def test_missing_settings_are_named_with_their_flags() -> None:
    with pytest.raises(StartupError, match=r"input_topic \(--input-topic\).*model \(--model\)"):
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
        ({"TORCHKAFKA_SHUTDOWN_TIMEOUT_S": "0"}, "shutdown_timeout_s must be > 0"),
        ({"TORCHKAFKA_STARTUP_TIMEOUT_S": "0"}, "startup_timeout_s must be > 0"),
        ({"TORCHKAFKA_DEAD_LETTER_MAX_RATIO": "1.5"}, "dead_letter_max_ratio must be in"),
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
    file.write_text(
        "max_batch_size = 32\nbatch_buckets = [1, 8, 32]\n"
        'input_shape = [3, 64, 64]\nbackend = "compile"\n'
    )
    environ = {"TORCHKAFKA_CHANNELS_LAST": "yes", "TORCHKAFKA_PRECISION": "bf16"}
    model = load_config(file, environ, {**REQUIRED, "cuda_graphs": "false"}).model
    assert model.batch_buckets == (1, 8, 32)
    assert model.input_shape == (3, 64, 64)
    assert (model.backend, model.precision) == ("compile", "bf16")
    assert model.channels_last is True
    assert model.cuda_graphs is False
    flags = {**REQUIRED, "batch_buckets": "4,16", "max_batch_size": 16, "input_shape": "8"}
    assert load_config(None, {}, flags).model.batch_buckets == (4, 16)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backend": "onnx"}, "backend must be one of eager, torchscript, compile"),
        ({"precision": "fp8"}, "precision must be one of fp32, fp16, bf16"),
        ({"channels_last": "maybe"}, "channels_last: cannot use 'maybe'"),
        ({"batch_buckets": "1,8,64"}, r"largest batch bucket \(64\) must equal max_batch_size"),
        ({"batch_buckets": "0,32"}, "batch_buckets must be >= 1"),
        ({"batch_sizing": "dynamic"}, "batch_sizing must be one of adaptive, fixed"),
        ({"latency_target_ms": "0"}, "latency_target_ms must be > 0"),
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


def test_group_membership_gives_each_worker_process_its_own_instance_id() -> None:
    cooperative = {"partition.assignment.strategy": "cooperative-sticky"}
    assert group_membership(load_config(None, {}, REQUIRED), 0) == cooperative
    config = load_config(None, {"TORCHKAFKA_GROUP_INSTANCE_ID": "node-a"}, REQUIRED)
    assert group_membership(config, 0) == {**cooperative, "group.instance.id": "node-a-0"}
    assert group_membership(config, 3) == {**cooperative, "group.instance.id": "node-a-3"}


def test_the_consumer_group_protocol_leaves_the_assignment_to_the_broker() -> None:
    config = load_config(None, {}, {**REQUIRED, "group_protocol": "consumer"})
    assert group_membership(config, 1) == {"group.protocol": "consumer"}
    with pytest.raises(StartupError, match="group_protocol"):
        load_config(None, {}, {**REQUIRED, "group_protocol": "kip848"})


def test_static_membership_is_refused_with_the_consumer_protocol() -> None:
    # Measured (bench/rebalance_bench.py): a static member restarted after kill -9 is
    # refused its instance id until the broker's session timeout, and the worker died.
    flags = {**REQUIRED, "group_protocol": "consumer", "group_instance_id": "node-a"}
    with pytest.raises(StartupError, match="UNRELEASED_INSTANCE_ID"):
        load_config(None, {}, flags)


def test_the_batch_memory_bound_defaults_to_512_mib_and_is_set_like_any_setting() -> None:
    assert load_config(None, {}, REQUIRED).batching.max_batch_mib == 512
    config = load_config(None, {"TORCHKAFKA_MAX_BATCH_MIB": "64"}, REQUIRED)
    assert config.batching.max_batch_mib == 64
    assert "MiB" in SETTINGS["max_batch_mib"].help


def test_a_batch_memory_bound_below_one_mib_is_refused() -> None:
    with pytest.raises(StartupError, match="max_batch_mib must be >= 1"):
        load_config(None, {}, {**REQUIRED, "max_batch_mib": 0})
