"""`make scan`'s verdict logic (tests/scan.py) and the waiver file it reads: a finding nobody waived fails, a
waiver nothing matches fails, and every waiver says why."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT
from tests.scan import Finding, Waiver, load_waivers, main, verdict

CPU = Finding("prod", "CKV_K8S_11", "Deployment.llm-inference.llama-8b", "CPU limits should be set", "/x.yaml")
ROOT_USER = Finding("prod", "CKV_K8S_23", "Deployment.llm-inference.llama-8b", "root containers", "/x.yaml")


def test_a_finding_without_a_waiver_and_a_waiver_without_a_finding_both_fail():
    waivers = [Waiver("CKV_K8S_11", ("Deployment.llm-inference.*",), "reason " * 10),
               Waiver("CKV_K8S_43", ("Deployment.nowhere.*",), "reason " * 10)]
    unwaived, stale = verdict([CPU, ROOT_USER], waivers)
    assert unwaived == [ROOT_USER] and stale == [waivers[1]]


def test_a_waiver_names_its_resources_exactly_or_by_pattern():
    exact = Waiver("CKV_K8S_11", ("Deployment.llm-gateway.llm-gateway",), "reason " * 10)
    assert not exact.covers(CPU)
    assert Waiver("CKV_K8S_11", ("Deployment.llm-*.llama-8b",), "reason " * 10).covers(CPU)
    assert not Waiver("CKV_K8S_40", ("*",), "reason " * 10).covers(CPU)  # another check


def test_the_committed_waivers_each_give_a_reason():
    waivers = load_waivers(ROOT / "security" / "waivers.yaml")
    assert waivers and all(len(w.reason) >= 40 for w in waivers)
    assert len({w.check for w in waivers}) == len(waivers)


def test_a_waiver_without_a_reason_is_refused(tmp_path):
    path = tmp_path / "waivers.yaml"
    path.write_text("waivers:\n  - check: CKV_K8S_11\n    resources: ['*']\n    reason: fine\n")
    with pytest.raises(ValueError, match="CKV_K8S_11"):
        load_waivers(path)


def test_main_exits_1_on_an_unwaived_finding(tmp_path, capsys):
    stack = tmp_path / "prod"
    stack.mkdir()
    failed = {"check_id": ROOT_USER.check, "resource": ROOT_USER.resource, "check_name": ROOT_USER.name,
              "file_path": ROOT_USER.file}
    (stack / "checkov-kubernetes.json").write_text(json.dumps(
        {"summary": {"passed": 3, "failed": 1}, "results": {"failed_checks": [failed]}}))
    (stack / "checkov-secrets.json").write_text(json.dumps({"passed": 0, "failed": 0}))
    waivers = tmp_path / "waivers.yaml"
    waivers.write_text("waivers: []\n")
    assert main([str(waivers), str(stack)]) == 1
    assert "unwaived: prod CKV_K8S_23 Deployment.llm-inference.llama-8b" in capsys.readouterr().out
