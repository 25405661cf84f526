"""Declarative schedules: the cron syntax, the schedule model, the ConfigMap form, and the reconcile plan.

A schedule is a ``BatchRLSchedule`` object (:mod:`batchrl.kube.schedule_resources`) or, where that CRD
cannot be installed, a ConfigMap labelled ``batchrl.io/schedule=true`` whose ``schedule.yaml`` key holds
a :class:`ScheduleSpec`; the recurring run it describes is named after the object. KFP's database is
the source of truth for recurring runs (the ScheduledWorkflow objects are derived from it), so the
reconciler (:mod:`batchrl.kfp.reconciler`) compares the schedules with what the KFP API lists and issues
KFP API calls: :func:`plan` is that comparison, pure and tested on its own. Recurring runs the
reconciler did not create (no marker in their description) are never touched; a schedule that fails to
parse or to check protects its recurring run instead of deleting it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from batchrl.errors import BatchRLError

SCHEDULE_LABEL = "batchrl.io/schedule"
SCHEDULE_KEY = "schedule.yaml"
MARKER = "managed-by=batchrl-reconciler"

_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
#: KFP parses cron with robfig/cron v1 (``cron.Parse``: second minute hour day-of-month month
#: [day-of-week], names case-insensitive, ``*``/``?``, ranges, ``/step``, lists). We require all six
#: fields: a five-field crontab would parse but mean something else (its first field is seconds).
#: name, low, high, regex of the numbers low..high, names allowed (checked by a test for every number)
_CRON_FIELDS = (
    ("second", 0, 59, "[0-5]?[0-9]", ()),
    ("minute", 0, 59, "[0-5]?[0-9]", ()),
    ("hour", 0, 23, "[01]?[0-9]|2[0-3]", ()),
    ("day-of-month", 1, 31, "0?[1-9]|[12][0-9]|3[01]", ()),
    ("month", 1, 12, "0?[1-9]|1[0-2]",
     ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day-of-week", 0, 6, "0?[0-6]", ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_CRON_EXAMPLE = 'KFP cron has 6 fields: second minute hour day-of-month month day-of-week, e.g. "0 0 2 * * *"'
_EVERY = "@every (?:[0-9]+[smh])+"


def _field_regex(numbers: str, names: tuple[str, ...]) -> str:
    """One cron field: a list of ``*``, ``?``, a value or a range, each with an optional ``/step``."""
    value = f"(?:{numbers}" + (f"|(?i:{'|'.join(names)})" if names else "") + ")"
    item = f"(?:[*?]|{value}(?:-{value})?)(?:/[1-9][0-9]*)?"
    return f"{item}(?:,{item})*"


def cron_pattern() -> str:
    """The whole KFP cron syntax as one regular expression (RE2 and Python ``re`` alike): the CRD's
    ``spec.cron`` pattern is this string, so ``kubectl apply`` refuses what :func:`validate_cron` refuses
    (except a backwards range such as ``5-1``, which only the reconciler can see)."""
    fields = "[ \t]+".join(f"(?:{_field_regex(numbers, names)})" for _, _, _, numbers, names in _CRON_FIELDS)
    descriptors = "|".join(d[1:] for d in _DESCRIPTORS)
    return f"^[ \t]*(?:@(?:{descriptors})|{_EVERY}|{fields})[ \t]*$"


def _cron_value(text: str, numbers: str, names: tuple[str, ...]) -> int:
    if text.upper() in names:
        return names.index(text.upper()) + (1 if len(names) == 12 else 0)
    return int(text) if re.fullmatch(numbers, text) else -1


def validate_cron(expression: str) -> str:
    """Check a KFP (robfig/cron, seconds first) cron expression; return it with single spaces."""
    expression = " ".join(expression.split())
    if expression in _DESCRIPTORS or re.fullmatch(_EVERY, expression):
        return expression
    fields = expression.split(" ")
    if len(fields) != 6:
        hint = " (a 5-field crontab? put the seconds first: '0 ' + yours)" if len(fields) == 5 else ""
        raise ValueError(f"'{expression}' has {len(fields)} fields{hint}; {_CRON_EXAMPLE}")
    for text, (name, low, high, numbers, names) in zip(fields, _CRON_FIELDS, strict=True):
        for part in text.split(","):
            base, _, step = part.partition("/")
            if step and not (step.isdigit() and int(step) > 0):
                raise ValueError(f"bad step '{step}' in the {name} field of '{expression}'")
            if base in ("*", "?"):
                continue
            bounds = [_cron_value(b, numbers, names) for b in base.split("-")]
            if len(bounds) > 2 or min(bounds) < 0:
                raise ValueError(f"'{part}' is not valid in the {name} field ({low}-{high}) of "
                                 f"'{expression}'; {_CRON_EXAMPLE}")
            if bounds[0] > bounds[-1]:
                raise ValueError(f"the range '{base}' in the {name} field of '{expression}' runs backwards")
    if not re.fullmatch(cron_pattern(), expression):  # the CRD's pattern: one syntax, two checkers
        raise ValueError(f"'{expression}' is not KFP cron syntax; {_CRON_EXAMPLE}")
    return expression


class ScheduleSpec(BaseModel):
    """One recurring run: what to run, when, how many at once, and whether missed runs are caught up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    cron: str
    pipeline: str = "batch-rl"
    #: The uploaded pipeline version's name; runs are pinned to it (never "latest").
    pipeline_version: str = Field(min_length=1)
    experiment: str = "batchrl"
    parameters: dict[str, Any] = Field(default_factory=dict)
    #: KFP allows 1..10 (backend/src/apiserver/server/api_converter.go)
    max_concurrency: int = Field(1, ge=1, le=10)
    enabled: bool = True
    #: skip the runs missed while disabled or down (KFP's ``no_catchup``)
    no_catchup: bool = True
    pipeline_root: str | None = None
    service_account: str | None = None
    description: str = ""

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return validate_cron(value)

    def digest(self) -> str:
        """Hash of everything a recurring run cannot change in place (all but ``enabled``)."""
        fields = self.model_dump(exclude={"enabled"})
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def managed_description(self) -> str:
        text = f"{self.description} " if self.description else ""
        return f"{text}[{MARKER} spec={self.digest()}]"


def parse_schedule(name: str, text: str, where: str) -> ScheduleSpec:
    """A :class:`ScheduleSpec` from a manifest's YAML; errors name the manifest and the key."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise BatchRLError(f"schedule is not valid YAML: {exc}", where=where, fix="correct the YAML") from None
    if not isinstance(data, dict):
        raise BatchRLError("schedule must be a mapping of keys", where=where, fix="see manifests/schedules/")
    try:
        return ScheduleSpec(name=name, **data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise BatchRLError(f"invalid schedule: {problems}", where=where,
                           fix="see manifests/schedules/configmap/nightly.yaml for the keys") from None
    except TypeError as exc:
        raise BatchRLError(f"invalid schedule: {exc}", where=where, fix="remove the 'name' key") from None


@dataclass(frozen=True)
class Manifests:
    """The applied schedules, and the names of those that could not be read (with why)."""

    specs: tuple[ScheduleSpec, ...]
    errors: tuple[tuple[str, str], ...] = ()


def schedules_from_configmaps(items: list[dict[str, Any]]) -> Manifests:
    specs, errors = [], []
    for item in items:
        meta = item.get("metadata") or {}
        name = meta.get("name", "?")
        where = f"ConfigMap {meta.get('namespace', '?')}/{name} key {SCHEDULE_KEY}"
        try:
            text = (item.get("data") or {}).get(SCHEDULE_KEY)
            if text is None:
                raise BatchRLError(f"no {SCHEDULE_KEY} key", where=where, fix="put the schedule under that key")
            specs.append(parse_schedule(name, text, where))
        except BatchRLError as exc:
            errors.append((name, exc.message))
    return Manifests(tuple(sorted(specs, key=lambda s: s.name)), tuple(errors))


def read_schedule_manifests(api_client: Any, namespace: str) -> Manifests:
    """The schedule ConfigMaps applied in ``namespace`` (needs ``list`` on configmaps)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        result = client.CoreV1Api(api_client).list_namespaced_config_map(
            namespace, label_selector=f"{SCHEDULE_LABEL}=true")
    except ApiException as exc:
        raise BatchRLError(f"could not list schedule ConfigMaps: HTTP {exc.status} {exc.reason}",
                           where=f"namespace {namespace}",
                           fix="the reconciler's service account needs 'list' on configmaps "
                               "(Role batchrl-schedule-reconciler in manifests/base)") from None
    items = [api_client.sanitize_for_serialization(item) for item in result.items]
    return schedules_from_configmaps(items)


@dataclass(frozen=True)
class ExistingRun:
    """A recurring run as the KFP API lists it."""

    id: str
    name: str
    description: str
    enabled: bool

    @property
    def managed(self) -> bool:
        return MARKER in (self.description or "")

    @property
    def digest(self) -> str | None:
        match = re.search(r"spec=([0-9a-f]{12})", self.description or "")
        return match.group(1) if match else None


@dataclass(frozen=True)
class Action:
    kind: Literal["create", "replace", "delete", "enable", "disable", "keep"]
    name: str
    run_id: str | None = None
    spec: ScheduleSpec | None = None

    @property
    def existing_id(self) -> str:
        """The recurring run a delete, enable or disable acts on (``plan`` always sets it for those)."""
        if self.run_id is None:
            raise ValueError(f"{self.kind} of schedule '{self.name}' names no recurring run")
        return self.run_id

    @property
    def desired(self) -> ScheduleSpec:
        """The schedule a create or replace submits (``plan`` always sets it for those)."""
        if self.spec is None:
            raise ValueError(f"{self.kind} of schedule '{self.name}' has no schedule spec")
        return self.spec


def plan(desired: tuple[ScheduleSpec, ...], existing: list[ExistingRun],
         protected: frozenset[str] = frozenset()) -> list[Action]:
    """What to do so the managed recurring runs equal ``desired``; ``protected`` names are left alone."""
    actions: list[Action] = []
    managed: dict[str, list[ExistingRun]] = {}
    for run in existing:
        if run.managed:
            managed.setdefault(run.name, []).append(run)
    for spec in desired:
        runs = sorted(managed.pop(spec.name, []), key=lambda r: r.id)
        keep = next((r for r in runs if r.digest == spec.digest()), None)
        for run in runs:
            if run is not keep:
                actions.append(Action("delete", spec.name, run.id))
        if keep is None:
            actions.append(Action("replace" if runs else "create", spec.name, None, spec))
        elif keep.enabled != spec.enabled:
            actions.append(Action("enable" if spec.enabled else "disable", spec.name, keep.id, spec))
        else:
            actions.append(Action("keep", spec.name, keep.id, spec))
    for name, runs in sorted(managed.items()):
        if name in protected:
            actions += [Action("keep", name, run.id) for run in runs]
        else:
            actions += [Action("delete", name, run.id) for run in runs]
    return actions


def manifest_documents(paths: list[str]) -> list[dict[str, Any]]:
    """The YAML documents in ``paths`` (what ``kubectl apply -f`` would read)."""
    documents = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                documents += [d for d in yaml.safe_load_all(fh) if d]
        except OSError as exc:
            raise BatchRLError(f"cannot read {path}: {exc.strerror}", fix="check the path") from None
        except yaml.YAMLError as exc:
            raise BatchRLError(f"not valid YAML: {exc}", where=path, fix="correct the syntax") from None
    return documents


def schedules_from_files(paths: list[str]) -> Manifests:
    """The schedule ConfigMaps in YAML files."""
    items = [doc for doc in manifest_documents(paths) if doc.get("kind") == "ConfigMap"
             and ((doc.get("metadata") or {}).get("labels") or {}).get(SCHEDULE_LABEL) == "true"]
    return schedules_from_configmaps(items)
