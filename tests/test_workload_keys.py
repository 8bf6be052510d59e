"""A workload's name keys its study: a study resumes only on the traffic it was created with."""

from __future__ import annotations

import pytest
import yaml

from autotune.workloads import Workload, WorkloadError, parse_workload_arg


def test_a_study_resumes_only_on_the_traffic_it_was_created_with(tmp_path):
    """A mix's name keys its study: edited in place, it is refused instead of mixing two traffics in one study."""
    from autotune.hardware import load_gpu
    from autotune.models import load_model
    from autotune.study.controller import open_study, with_slo
    from autotune.study.storage import storage_for
    from autotune.study.plan import build_plan

    def plan_for(mix_file):
        [w] = parse_workload_arg(str(mix_file))
        return build_plan(model=load_model("26B-A4B"), model_ref="26B-A4B", gpu=load_gpu("H100"), workload=w,
                          backend="sim-fast", objective=with_slo("throughput", None), n_trials=4, log_dir=str(tmp_path))

    mix = tmp_path / "deploy.yaml"
    mix.write_text(yaml.safe_dump({"mix": [{"preset": "chat", "weight": 3}, {"preset": "summarization"}],
                                   "num_prompts": 40, "max_concurrency": 16}))
    storage = storage_for(f"sqlite:///{tmp_path}/s.db")
    study = open_study(plan_for(mix), storage)
    assert study.user_attrs["workload"] == "deploy"
    assert Workload.from_dict(study.user_attrs["workload_spec"]) == parse_workload_arg(str(mix))[0]
    open_study(plan_for(mix), storage)  # same traffic: resumes
    mix.write_text(yaml.safe_dump({"mix": [{"preset": "chat", "weight": 1}, {"preset": "summarization"}],
                                   "num_prompts": 40, "max_concurrency": 16}))
    with pytest.raises(WorkloadError, match="workload 'deploy' is not the one study .* was created with"):
        open_study(plan_for(mix), storage)


def test_launch_and_rules_take_the_workload_file(tmp_path):
    from autotune.cli.serving import _workload_record
    from autotune.store import Store

    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.migrate()
    mix = tmp_path / "deploy.yaml"
    mix.write_text(yaml.safe_dump({"mix": [{"preset": "chat"}, {"preset": "long-context"}], "max_concurrency": 8}))
    record = _workload_record(store, str(mix))
    assert record.name == "deploy" and record.spec == parse_workload_arg(str(mix))[0].to_dict()
    two = tmp_path / "two.yaml"
    two.write_text(yaml.safe_dump([{"preset": "chat"}, {"preset": "summarization"}]))
    with pytest.raises(WorkloadError, match="defines 2 workloads; pass one by name: chat, summarization"):
        _workload_record(store, str(two))
    store.close()
