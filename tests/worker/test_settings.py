"""cocoon worker run's settings: a TOML config file and flags, flags winning; clear refusals."""
import pytest

from node.worker.settings import WorkerSettings

BASE = dict(owner="0:" + "11" * 32, operator_key_file="op.key", registry="0:" + "22" * 32, dev_root="dev")


def test_config_file_then_flags(tmp_path, model_path):
    cfg = tmp_path / "worker.toml"
    cfg.write_text(f'[worker]\nmodel = "{model_path}"\ncoefficient = 1500\nqueue = 3\nproxy-endpoint = "h:1"\n')
    s = WorkerSettings.load(str(cfg), dict(BASE, queue=5))
    assert s.coefficient == 1500 and s.queue == 5 and s.proxy_endpoint == "h:1"
    assert s.model_name == "SmolLM2-135M-Instruct" and s.chain_state == ".cocoon/chain.json"


@pytest.mark.parametrize("text,flags,why", [
    ('nope = 1\n', {}, "unknown setting 'nope'"),
    ('failpoint = "receipt-stored"\n', {}, "unknown setting"),
    ('coefficient = [\n', {}, "not valid TOML"),
    ('', {"owner": None, "operator_key_file": "k"}, None),
    ('', {"engine": "http"}, "--engine-url"),
    ('', {"tee": "tdx"}, "--pccs-url"),
    ('', {"coefficient": 0}, "--coefficient"),
    ('', {"model": "/nonexistent.gguf"}, "does not exist"),
])
def test_refusals(tmp_path, model_path, text, flags, why):
    cfg = tmp_path / "worker.toml"
    cfg.write_text(text)
    args = dict(BASE, model=model_path)
    args.update(flags)
    if flags.get("owner", "x") is None:
        args["owner"] = ""
        why = "owner"
    with pytest.raises(ValueError, match=why):
        WorkerSettings.load(str(cfg), args)
