"""The delivery workflows' safety properties (.github/workflows), which actionlint (make lint) cannot know:
actions pinned by commit, least permissions, AWS only through OIDC, state credentials only from secrets, the
policy pack on every preview and update, prod behind its environment, one update per stack, never cancelled."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, pins

WORKFLOWS = ROOT / ".github" / "workflows"
PINNED = re.compile(r"^\s*-?\s*uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # (v\d+(\.\d+)*)\s*$")
OIDC_ACTION = "aws-actions/configure-aws-credentials"
PULUMI_ACTION = "pulumi/actions"


def load(name: str) -> dict[str, Any]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the bare key `on` as true
    return workflow


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if s.get("uses", "").split("@")[0] == action]


def all_jobs() -> list[tuple[str, str, dict[str, Any]]]:
    return [(path.name, name, job) for path in sorted(WORKFLOWS.glob("*.yml")) for name, job in load(path.name)["jobs"].items()]


def test_the_workflows_exist():
    assert {p.name for p in WORKFLOWS.glob("*.yml")} == {"preview.yml", "deploy.yml", "pulumi-up.yml"}


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yml")), ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_with_its_version_named(path: Path):
    uses = [line for line in path.read_text().splitlines() if re.match(r"^\s*-?\s*uses:", line)]
    remote = [line for line in uses if "uses: ./" not in line]
    assert remote, f"{path.name} uses no action"
    unpinned = [line.strip() for line in remote if not PINNED.match(line)]
    assert unpinned == [], f"not pinned to a full commit SHA with a '# vX.Y.Z' comment: {unpinned}"


def test_each_action_is_pinned_to_one_commit_everywhere():
    pins: dict[str, set[str]] = {}
    for path in WORKFLOWS.glob("*.yml"):
        for match in filter(None, map(PINNED.match, path.read_text().splitlines())):
            pins.setdefault(match[1], set()).add(match[2])
    assert {action: len(shas) for action, shas in pins.items()} == dict.fromkeys(pins, 1)
    assert PULUMI_ACTION in pins and OIDC_ACTION in pins


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yml")), ids=lambda p: p.name)
def test_workflows_grant_nothing_by_default(path: Path):
    assert load(path.name)["permissions"] == {}


@pytest.mark.parametrize("workflow, name, job", all_jobs(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_job_asks_only_for_what_it_uses(workflow, name, job):
    permissions = job.get("permissions")
    assert isinstance(permissions, dict), f"{workflow} {name}: no permissions: block (would inherit the default)"
    assert "write-all" not in str(permissions) and permissions.get("contents") in ("read", None)
    calls_aws = bool(steps_using(job, OIDC_ACTION)) or job.get("uses", "").endswith("pulumi-up.yml")
    assert (permissions.get("id-token") == "write") == calls_aws, f"{workflow} {name}: id-token"
    comments = any(s.get("with", {}).get("comment-on-pr") for s in steps_using(job, PULUMI_ACTION))
    assert (permissions.get("pull-requests") == "write") == comments, f"{workflow} {name}: pull-requests"
    assert set(permissions) <= {"contents", "id-token", "pull-requests"}


@pytest.mark.parametrize("workflow, name, job", [j for j in all_jobs() if steps_using(j[2], OIDC_ACTION)],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_aws_is_reached_only_through_an_oidc_role_named_in_a_variable(workflow, name, job):
    (step,) = steps_using(job, OIDC_ACTION)
    assert re.fullmatch(r"\$\{\{ vars\.AWS_(PREVIEW|DEPLOY)_ROLE_ARN \}\}", step["with"]["role-to-assume"])
    assert not {"aws-access-key-id", "aws-secret-access-key", "aws-session-token"} & set(step["with"])
    # The credentials come before the Pulumi step that uses them.
    steps = [s.get("uses", "").split("@")[0] for s in job["steps"]]
    assert steps.index(OIDC_ACTION) < steps.index(PULUMI_ACTION)


def test_no_long_lived_aws_keys_anywhere():
    text = "\n".join(p.read_text() for p in WORKFLOWS.glob("*.yml"))
    assert not re.search(r"AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|aws-access-key-id", text)


@pytest.mark.parametrize("workflow, name, job", [j for j in all_jobs() if steps_using(j[2], PULUMI_ACTION)],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_pulumi_run_applies_the_policy_pack_with_its_stack_config(workflow, name, job):
    (step,) = steps_using(job, PULUMI_ACTION)
    inputs = step["with"]
    assert inputs["policyPacks"] == "policy" and (ROOT / "policy" / "PulumiPolicy.yaml").exists()
    config = inputs["policyPackConfigs"]
    stacks = job.get("strategy", {}).get("matrix", {}).get("stack") or ["dev", "prod"]
    for stack in stacks:
        resolved = re.sub(r"\$\{\{ (matrix|inputs)\.stack \}\}", stack, config)
        assert (ROOT / resolved).exists(), resolved
    assert inputs["pulumi-version"] == pins("requirements.txt")["pulumi"], "CLI and SDK from the same release"
    assert inputs["cloud-url"] == "${{ secrets.PULUMI_BACKEND_URL }}"
    assert job["env"]["PULUMI_ACCESS_TOKEN"] == "${{ secrets.PULUMI_ACCESS_TOKEN }}"
    assert job["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    # The program's and the pack's virtualenvs exist before the CLI runs them.
    assert any(s.get("run") == "make pulumi-deps" for s in job["steps"][: [s.get("uses", "").split("@")[0]
                                                                          for s in job["steps"]].index(PULUMI_ACTION)])


def test_the_pulumi_action_is_its_current_major():
    text = (WORKFLOWS / "preview.yml").read_text()
    assert re.search(r"uses: pulumi/actions@[0-9a-f]{40} # v7\.", text)


def test_pull_requests_are_tested_then_previewed_in_both_stacks_with_the_diff_commented():
    workflow = load("preview.yml")
    assert set(workflow["on"]) == {"pull_request"}
    test, preview = workflow["jobs"]["test"], workflow["jobs"]["preview"]
    assert [s["run"] for s in test["steps"] if "run" in s] == ["make test", "make lint"]
    assert preview["needs"] == "test"
    assert preview["strategy"]["matrix"]["stack"] == ["dev", "prod"] and preview["strategy"]["fail-fast"] is False
    (step,) = steps_using(preview, PULUMI_ACTION)
    assert step["with"]["command"] == "preview" and step["with"]["comment-on-pr"] is True
    assert step["with"]["stack-name"] == "${{ matrix.stack }}"
    assert "environment" not in preview, "previews must not wait for prod's reviewers"


def test_main_deploys_dev_then_prod_behind_its_environment():
    workflow = load("deploy.yml")
    assert workflow["on"] == {"push": {"branches": ["main"]}}
    jobs = workflow["jobs"]
    assert jobs["dev"]["needs"] == "test" and jobs["prod"]["needs"] == "dev"
    assert {jobs[s]["uses"] for s in ("dev", "prod")} == {"./.github/workflows/pulumi-up.yml"}
    assert jobs["dev"]["with"] == {"stack": "dev"} and jobs["prod"]["with"] == {"stack": "prod"}
    for stack in ("dev", "prod"):  # secrets passed one by one, not `secrets: inherit`
        assert set(jobs[stack]["secrets"]) == {"PULUMI_ACCESS_TOKEN", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_BACKEND_URL"}


def test_an_update_runs_in_its_stacks_environment_one_at_a_time_and_is_never_cancelled():
    workflow = load("pulumi-up.yml")
    assert set(workflow["on"]) == {"workflow_call"}
    (job,) = workflow["jobs"].values()
    assert job["environment"] == "${{ inputs.stack }}"
    assert job["concurrency"] == {"group": "pulumi-up-${{ inputs.stack }}", "cancel-in-progress": False}
    (step,) = steps_using(job, PULUMI_ACTION)
    assert step["with"]["command"] == "up" and step["with"]["stack-name"] == "${{ inputs.stack }}"
    assert "concurrency" not in load("deploy.yml"), "a workflow-level group with cancellation would cut an update"


def test_the_readme_oidc_recipe_trusts_exactly_the_subjects_the_workflows_present(tmp_path):
    """Run README's recipe with a stand-in `aws` that records its calls: the preview role must admit the
    pull_request subject (preview.yml's jobs run in no environment) and the deploy role each stack's environment."""
    readme = (ROOT / "README.md").read_text()
    recipe = next(block for block in re.findall(r"```bash\n(.*?)```", readme, re.S) if "trust()" in block)
    calls = tmp_path / "calls"
    stand_in = (f'aws() {{ printf "%s\\0" "$@" >> {calls}; printf "\\n\\0" >> {calls}; '
                '[ "$1 $2" = "sts get-caller-identity" ] && echo 111122223333; return 0; }\n')
    subprocess.run(["bash", "-euo", "pipefail", "-c", stand_in + recipe], check=True, timeout=30)
    invocations = [c.split("\0")[:-1] for c in calls.read_text().split("\n\0") if c]
    roles, sessions = {}, {}
    for args in invocations:
        if args[:2] == ["iam", "create-role"]:
            options = dict(zip(args[2::2], args[3::2], strict=True))
            roles[options["--role-name"]] = json.loads(options["--assume-role-policy-document"])
            sessions[options["--role-name"]] = int(options.get("--max-session-duration", 3600))
    subjects = {name: doc["Statement"][0]["Condition"]["StringEquals"] for name, doc in roles.items()}
    assert subjects["llm-platform-preview"]["token.actions.githubusercontent.com:sub"] == \
        "repo:your-org/llm-platform:pull_request"
    stacks = [load("deploy.yml")["jobs"][job]["with"]["stack"] for job in ("dev", "prod")]
    assert subjects["llm-platform-deploy"]["token.actions.githubusercontent.com:sub"] == \
        [f"repo:your-org/llm-platform:environment:{stack}" for stack in stacks]
    assert all(s["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com" for s in subjects.values())
    assert all(doc["Statement"][0]["Principal"]["Federated"].endswith(
        ":oidc-provider/token.actions.githubusercontent.com") for doc in roles.values())
    (up,) = load("pulumi-up.yml")["jobs"].values()
    (credentials,) = steps_using(up, OIDC_ACTION)
    assert sessions["llm-platform-deploy"] >= credentials["with"]["role-duration-seconds"]


def test_jobs_that_reach_the_cluster_run_on_a_runner_the_stack_can_admit():
    """A private or narrowed API endpoint (prod) is reachable only from a runner inside the VPC or in
    cluster.publicAccessCidrs: the Pulumi jobs take their runner from a variable; the others need no cluster."""
    for workflow, name, job in all_jobs():
        if steps_using(job, PULUMI_ACTION):
            assert job["runs-on"] == "${{ vars.PULUMI_RUNNER || 'ubuntu-24.04' }}", f"{workflow} {name}"
        elif "runs-on" in job:
            assert job["runs-on"] == "ubuntu-24.04", f"{workflow} {name}"
