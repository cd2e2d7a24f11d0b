"""Config errors name the key; environment and flags override the file."""

import pytest

from skygraph.agent import capture_settings
from skygraph.capture.sources.base import AgentCaptureSettings
from skygraph.config import ConfigError, heap_mb, load, override


def write(tmp_path, text, name="skygraph.yml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_without_a_file():
    cfg = load(None, env={})
    assert cfg.analyzer.listen == "127.0.0.1:8082"
    assert cfg.graph.uri == ""
    assert cfg.graph.embedded.bolt_port == 7687


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"graph.embedded.bolt_prot: unknown key"):
        load(write(tmp_path, "graph:\n  embedded:\n    bolt_prot: 1\n"), env={})


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"graph.writer.max_batch: expected an integer, got 'x'"):
        load(write(tmp_path, "graph:\n  writer:\n    max_batch: x\n"), env={})
    with pytest.raises(ConfigError, match=r"analyzer: expected a mapping"):
        load(write(tmp_path, "analyzer: 3\n"), env={})


def test_bad_yaml_and_missing_file_are_reported(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        load(write(tmp_path, "a: [\n"), env={})
    with pytest.raises(ConfigError, match=r"cannot read"):
        load(str(tmp_path / "nope.yml"), env={})


def test_toml_env_and_flags(tmp_path):
    path = write(tmp_path, '[analyzer]\nlisten = "0.0.0.0:9000"\n[graph]\nuri = "bolt://a:1"\n',
                 "c.toml")
    cfg = load(path, env={"SKYGRAPH_GRAPH_URI": "bolt://b:2", "SKYGRAPH_GRAPH_PASSWORD": "pw"})
    assert cfg.analyzer.listen == "0.0.0.0:9000"
    assert (cfg.graph.uri, cfg.graph.password) == ("bolt://b:2", "pw")
    cfg = override(cfg, uri="bolt://c:3", user=None)
    assert (cfg.graph.uri, cfg.graph.user) == ("bolt://c:3", "neo4j")


def test_capture_workers_and_ring_blocks(tmp_path):
    """agent.capture.workers (1..64) and ring_blocks (2..1024) reach the capture settings."""
    assert capture_settings(load(None, env={})) == AgentCaptureSettings()
    assert (AgentCaptureSettings().workers, AgentCaptureSettings().ring_blocks) == (1, 32)
    cfg = load(write(tmp_path, "agent:\n  capture:\n    workers: 64\n    ring_blocks: 2\n"),
               env={})
    assert (cfg.agent.capture.workers, cfg.agent.capture.ring_blocks) == (64, 2)
    settings = capture_settings(cfg)
    assert (settings.workers, settings.ring_blocks) == (64, 2)
    for text, message in (("workers: 0", "agent.capture.workers: 0 is outside 1..64"),
                          ("workers: 65", "agent.capture.workers: 65 is outside 1..64"),
                          ("ring_blocks: 1", "agent.capture.ring_blocks: 1 is outside 2..1024"),
                          ("ring_blocks: 1025",
                           "agent.capture.ring_blocks: 1025 is outside 2..1024"),
                          ("workers: two",
                           "agent.capture.workers: expected an integer, got 'two'")):
        with pytest.raises(ConfigError, match=message):
            load(write(tmp_path, f"agent:\n  capture:\n    {text}\n"), env={})


def test_raw_packet_bound_must_not_be_negative(tmp_path):
    """SPEC §3 fix 6: RawPacketLimit is 0..analyzer.api.max_raw_packets, in config too."""
    assert load(write(tmp_path, "analyzer:\n  api:\n    max_raw_packets: 0\n"),
                env={}).analyzer.api.max_raw_packets == 0
    with pytest.raises(ConfigError, match=r"analyzer.api.max_raw_packets: must be 0 or more"):
        load(write(tmp_path, "analyzer:\n  api:\n    max_raw_packets: -1\n"), env={})


def test_flow_retention_zero_keeps_everything_and_negative_is_refused(tmp_path):
    assert load(None, env={}).flow.retention == 86_400
    assert load(write(tmp_path, "flow:\n  retention: 0\n"), env={}).flow.retention == 0
    assert load(write(tmp_path, "flow:\n  retention: 60\n"), env={}).flow.retention == 60
    with pytest.raises(ConfigError, match=r"^flow\.retention: must be 0 \(keep flows forever\) "
                                          r"or a number of seconds, got -1$"):
        load(write(tmp_path, "flow:\n  retention: -1\n"), env={})
    with pytest.raises(ConfigError, match=r"flow\.expire: must be positive, got 0"):
        load(write(tmp_path, "flow:\n  expire: 0\n"), env={})


def test_the_embedded_heap_is_a_jvm_size_of_256m_or_more(tmp_path):
    assert load(None, env={}).graph.embedded.heap == "1g"
    cfg = load(write(tmp_path, "graph:\n  embedded:\n    heap: 768m\n"), env={})
    assert cfg.graph.embedded.heap == "768m" and heap_mb(cfg.graph.embedded.heap) == 768
    assert heap_mb("2G") == 2048
    for bad in ("1gb", "lots", "-1g", "1024k"):
        with pytest.raises(ConfigError, match=r"^graph\.embedded\.heap: .* is not a size like"):
            load(write(tmp_path, f"graph:\n  embedded:\n    heap: {bad}\n"), env={})
    with pytest.raises(ConfigError, match=r"^graph\.embedded\.heap: '128m' is below 256m$"):
        load(write(tmp_path, "graph:\n  embedded:\n    heap: 128m\n"), env={})
