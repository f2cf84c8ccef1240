"""The ``bbbctl stack`` commands: each reads settings, calls the adapters, prints results.

Results go to ``out`` (stdout), the progress display and problems to ``err``
(stderr), logs through bbbcore.logs (JSON on stderr). Each returns an exit code.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from bbbcore import aws, logs, secrets
from bbbcore.config import ConfigError
from bbbctl import fleet, iam_check, platform, sync
from bbbctl.progress import Progress
from bbbctl.settings import CtlSettings, require_bucket
from bbbctl.stack import (
    DELETE,
    GROUP_TYPE,
    ChangeSet,
    Outcome,
    ParameterError,
    Stacks,
    StackState,
    fleet_changes,
    parameter_list,
    parse_parameters,
    render_changes,
    warnings,
)

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling.client import AutoScalingClient
    from types_aiobotocore_cloudformation.client import CloudFormationClient
    from types_aiobotocore_ec2.client import EC2Client
    from types_aiobotocore_s3.client import S3Client

log = logs.get(__name__)

# Parameters bbbctl fills itself: where the nested templates are.
BUCKET_PARAMETER = "TemplateBucket"
PREFIX_PARAMETER = "TemplatePrefix"


@dataclass(frozen=True, slots=True)
class Context:
    """What every command needs besides its own flags."""

    settings: CtlSettings
    out: TextIO
    err: TextIO
    confirm: Callable[[str], bool]
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


def template_prefix(settings: CtlSettings) -> str:
    """Key prefix of the synced templates (what the root's TemplatePrefix must be)."""
    return settings.bucket.prefix + settings.stack.template_dir.as_posix().strip("/") + "/"


def template_url(bucket: str, region: str, key: str) -> str:
    """The S3 URL CloudFormation reads a template from."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://{bucket}.s3.{region}.{suffix}/{key}"


def template_paths(settings: CtlSettings) -> list[Path]:
    """The templates of the stack, from the checkout."""
    return iam_check.template_files([settings.sync.root / settings.stack.template_dir])


class _Aws:
    """The S3 and CloudFormation clients of one command, opened and closed together."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._session = aws.session(ctx.settings.aws.region)
        self._stack = AsyncExitStack()
        self.s3: S3Client
        self.cfn: CloudFormationClient
        self.autoscaling: AutoScalingClient
        self.ec2: EC2Client
        self.stacks: Stacks

    @property
    def session(self) -> Any:
        """The aioboto3 session the clients come from (for Secrets Manager)."""
        return self._session

    @property
    def region(self) -> str:
        region = self._ctx.settings.aws.region or self._session.region_name
        if not region:
            raise ConfigError(
                ["aws.region (BBBCTL_AWS__REGION): no region set and none configured"]
            )
        return str(region)

    async def __aenter__(self) -> _Aws:
        self.region  # noqa: B018 - fails with a ConfigError before any client exists
        config = aws.client_config()
        self.s3 = await self._stack.enter_async_context(self._session.client("s3", config=config))
        self.cfn = await self._stack.enter_async_context(
            self._session.client("cloudformation", config=config)
        )
        # Only the fleet check before a delete or an update calls these.
        self.autoscaling = await self._stack.enter_async_context(
            self._session.client("autoscaling", config=config)
        )
        self.ec2 = await self._stack.enter_async_context(self._session.client("ec2", config=config))
        wait = self._ctx.settings.wait
        self.stacks = Stacks(
            self.cfn, Progress(self._ctx.err), wait.poll_interval, wait.timeout, self._ctx.sleep
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


async def validate(ctx: Context, local: bool) -> int:
    """cfn-lint and the IAM check over the templates; ValidateTemplate unless ``local``."""
    files = template_paths(ctx.settings)
    if not files:
        print(f"no templates in {ctx.settings.stack.template_dir}", file=ctx.err)
        return 1
    if importlib.util.find_spec("cfnlint") is None:
        # An extra, not a dependency: only this command needs it.
        print("bbbctl stack validate needs cfn-lint: pip install 'bbbfleet[deploy]'", file=ctx.err)
        return 2
    errors = await asyncio.to_thread(_lint, files, ctx.settings.aws.region, ctx.out)
    findings = iam_check.check_files(files)
    for finding in findings:
        print(finding, file=ctx.out)
    errors += len(findings)
    if not local:
        async with _Aws(ctx) as cloud:
            for path in files:
                try:
                    await cloud.stacks.validate(path.read_text(encoding="utf-8"))
                except Exception as exc:  # botocore's ClientError carries the reason
                    print(f"{path}: ValidateTemplate: {exc}", file=ctx.out)
                    errors += 1
    checks = "cfn-lint, IAM check" + ("" if local else ", ValidateTemplate")
    print(f"{len(files)} templates ({checks}): {errors} errors", file=ctx.out)
    return 1 if errors else 0


def _lint(files: Sequence[Path], region: str | None, out: TextIO) -> int:
    from cfnlint.api import ManualArgs, lint_file

    errors = 0
    config = ManualArgs(regions=[region or "us-east-1"])
    for path in files:
        for match in lint_file(path, config=config):
            severity = str(match.rule.severity)
            print(
                f"{path}:{match.linenumber}: {match.rule.id} {severity}: {match.message}", file=out
            )
            errors += severity == "error"
    return errors


async def sync_files(ctx: Context, cloud: _Aws) -> sync.SyncPlan:
    """Upload what changed under the prefix; print what was done."""
    settings = ctx.settings
    bucket = require_bucket(settings)
    local = await asyncio.to_thread(
        sync.collect, settings.sync.root, settings.sync.files, settings.bucket.prefix
    )
    if not any(f.key.endswith(".whl") for f in local):
        print(
            "note: no wheel matched; build one with `pip wheel --no-deps -w dist .`", file=ctx.err
        )
    remote = await sync.remote_checksums(cloud.s3, bucket, settings.bucket.prefix)
    todo = sync.plan(local, remote)
    await sync.apply(cloud.s3, bucket, todo)
    for item in todo.upload:
        print(f"uploaded  s3://{bucket}/{item.key}", file=ctx.out)
    for key in todo.stale:
        print(f"deleted   s3://{bucket}/{key}", file=ctx.out)
    print(
        f"sync: {len(todo.upload)} uploaded, {len(todo.unchanged)} unchanged, "
        f"{len(todo.stale)} deleted",
        file=ctx.out,
    )
    return todo


async def sync_command(ctx: Context) -> int:
    """``bbbctl stack sync``."""
    require_bucket(ctx.settings)
    async with _Aws(ctx) as cloud:
        await sync_files(ctx, cloud)
    return 0


def _read_parameters(ctx: Context) -> dict[str, str]:
    path = ctx.settings.stack.parameters_file
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [f"stack.parameters_file (BBBCTL_STACK__PARAMETERS_FILE): {exc}"]
        ) from None
    return parse_parameters(text, str(path))


async def deploy(
    ctx: Context, kind: Literal["create", "update"], yes: bool, force: bool = False
) -> int:
    """``bbbctl stack create|update``: sync, change set, show it, execute, wait.

    An update that removes or replaces the fleet's group is refused while its hosts run
    meetings, or cannot be read, unless ``force``.
    """
    settings = ctx.settings
    name = settings.stack.name
    given = _read_parameters(ctx)
    bucket = require_bucket(settings)
    async with _Aws(ctx) as cloud:
        await sync_files(ctx, cloud)
        current = await cloud.stacks.describe(name)
        exists = current is not None and current.status != "REVIEW_IN_PROGRESS"
        if kind == "create" and exists:
            print(
                f"stack {name} exists ({_status(current)}); use `bbbctl stack update`", file=ctx.err
            )
            return 1
        if kind == "update" and not exists:
            print(f"stack {name} does not exist; use `bbbctl stack create`", file=ctx.err)
            return 1
        root_key = template_prefix(settings) + settings.stack.root_template
        url = template_url(bucket, cloud.region, root_key)
        declared = await cloud.stacks.declared_parameters(url)
        if BUCKET_PARAMETER in declared:
            given[BUCKET_PARAMETER] = bucket
        if PREFIX_PARAMETER in declared:
            given[PREFIX_PARAMETER] = template_prefix(settings)
        previous = current.parameters if kind == "update" and current else frozenset()
        parameters = parameter_list(declared, given, previous)
        change_set = await cloud.stacks.create_change_set(
            name,
            url,
            parameters,
            "CREATE" if kind == "create" else "UPDATE",
            f"bbbctl-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}",
        )
        ctx.out.write(render_changes(change_set.changes))
        if change_set.empty:
            print(f"stack {name}: nothing to change", file=ctx.out)
            return 0
        for text in warnings(change_set.changes):
            print(f"WARNING: {text}", file=ctx.err)
        found = await _replaced_groups(cloud, change_set) if kind == "update" else NOTHING
        replaced = ", ".join(found.groups) or "the fleet's group"
        action = f"update stack {name} (it removes or replaces {replaced})"
        allowed = await _fleet_allows(ctx, cloud, found, action, force)
        asked = allowed and not yes
        if asked and not ctx.confirm(f"execute these changes on stack {name}?"):
            allowed = False
        if allowed and asked and not force:
            # Meetings may have started while the question waited.
            allowed = await _fleet_allows(ctx, cloud, found, action, force, quiet=True)
        if not allowed:
            await cloud.stacks.discard_change_set(change_set.change_set_id)
            if kind == "create":
                # A CREATE change set leaves an empty stack in REVIEW_IN_PROGRESS.
                await cloud.stacks.delete(change_set.stack_id)
            print("not executed", file=ctx.err)
            return 1
        seen = await cloud.stacks.seen_events(change_set.stack_id)
        await cloud.stacks.execute(change_set.change_set_id)
        outcome = await cloud.stacks.wait(change_set.stack_id, kind, seen)
    return _report(ctx, outcome, kind)


def _status(state: StackState | None) -> str:
    return state.status if state else "absent"


def _report(ctx: Context, outcome: Outcome, operation: str) -> int:
    if outcome.ok:
        if outcome.state is not None:
            _print_state(ctx, outcome.state)
        else:
            print(f"{operation}: done", file=ctx.out)
        return 0
    print(f"{operation} failed ({_status(outcome.state)}): {outcome.cause}", file=ctx.err)
    return 1


def _print_state(ctx: Context, state: StackState) -> None:
    print(f"stack   {state.name}\nstatus  {state.status}", file=ctx.out)
    if state.reason:
        print(f"reason  {state.reason}", file=ctx.out)
    if state.outputs:
        width = max(len(key) for key, _, _ in state.outputs)
        print("outputs", file=ctx.out)
        for key, value, _ in sorted(state.outputs):
            print(f"  {key.ljust(width)}  {value}", file=ctx.out)


async def status(ctx: Context) -> int:
    """``bbbctl stack status``: the stack's state and outputs; exit 1 when there is none."""
    async with _Aws(ctx) as cloud:
        state = await cloud.stacks.describe(ctx.settings.stack.name)
    if state is None:
        print(f"stack {ctx.settings.stack.name} does not exist", file=ctx.out)
        return 1
    _print_state(ctx, state)
    return 0


async def delete(ctx: Context, yes: bool, force: bool = False) -> int:
    """``bbbctl stack delete``: empty the buckets the delete removes and the synced prefix,
    then delete (a bucket the stack retains is kept whole).

    Refused while the fleet's hosts run meetings, or cannot be read, unless ``force``;
    checked before asking, and again after the answer.
    """
    settings = ctx.settings
    name = settings.stack.name
    async with _Aws(ctx) as cloud:
        state = await cloud.stacks.describe(name)
        action = f"delete stack {name}"
        found = NOTHING if state is None else await _stack_groups(cloud, state.stack_id)
        if not await _fleet_allows(ctx, cloud, found, action, force):
            print("not deleted", file=ctx.err)
            return 1
        what = f"stack {name} ({_status(state)})"
        if settings.bucket.name:
            what += f" and s3://{settings.bucket.name}/{settings.bucket.prefix}"
        if not yes and not ctx.confirm(f"delete {what}?"):
            print("not deleted", file=ctx.err)
            return 1
        # Meetings may have started while the question waited.
        if not (yes or force) and not await _fleet_allows(
            ctx, cloud, found, action, force, quiet=True
        ):
            print("not deleted", file=ctx.err)
            return 1
        if state is not None:
            # Only a bucket CloudFormation deletes must be empty first; one it keeps (Loki's
            # logs, Retain) is left whole, as the template promises.
            buckets = await cloud.stacks.deletion_policies(state.stack_id, "AWS::S3::Bucket")
            for bucket, policy in buckets:
                if policy != DELETE:
                    print(f"kept      s3://{bucket} (DeletionPolicy {policy})", file=ctx.out)
                    continue
                count = await sync.empty_bucket(cloud.s3, bucket)
                print(f"emptied   s3://{bucket} ({count} objects)", file=ctx.out)
        if settings.bucket.name:
            count = await sync.empty_bucket(cloud.s3, settings.bucket.name, settings.bucket.prefix)
            print(
                f"emptied   s3://{settings.bucket.name}/{settings.bucket.prefix} ({count} objects)",
                file=ctx.out,
            )
        if state is None:
            print(f"stack {name} does not exist", file=ctx.out)
            return 0
        seen = await cloud.stacks.seen_events(state.stack_id)
        await cloud.stacks.delete(state.stack_id)
        outcome = await cloud.stacks.wait(state.stack_id, "delete", seen)
    if outcome.ok:
        print(f"stack {name} deleted", file=ctx.out)
        return 0
    return _report(ctx, outcome, "delete")


# ------------------------------------------------------------------ the fleet check


@dataclass(frozen=True, slots=True)
class Groups:
    """The groups an operation would end, or why they could not be found."""

    groups: tuple[str, ...] = ()
    problem: str = ""


NOTHING = Groups()


async def _stack_groups(cloud: _Aws, stack: str) -> Groups:
    """The stack's Auto Scaling Groups, nested stacks included."""
    try:
        return Groups(tuple(await cloud.stacks.resources(stack, GROUP_TYPE)))
    except (ClientError, BotoCoreError) as exc:
        return Groups(problem=f"the stack's groups: {exc}")


async def _replaced_groups(cloud: _Aws, change_set: ChangeSet) -> Groups:
    """The groups the change set removes or replaces, directly or with their nested stack."""
    direct, nested = fleet_changes(change_set.changes)
    if not direct and not nested:
        return NOTHING
    if not all(c.physical_id for c in (*direct, *nested)):
        # CloudFormation did not name them: any group of the stack may be the one.
        return await _stack_groups(cloud, change_set.stack_id)
    found = [c.physical_id for c in direct]
    for change in nested:
        inside = await _stack_groups(cloud, change.physical_id)
        if inside.problem:
            return inside
        found += inside.groups
    return Groups(tuple(sorted(set(found))))


async def _fleet_allows(
    ctx: Context, cloud: _Aws, found: Groups, action: str, force: bool, quiet: bool = False
) -> bool:
    """Read the fleet of ``found`` and say whether ``action`` may end it (see bbbctl.fleet).

    ``quiet``: print nothing when it may (a second look right before acting).
    """
    if found.problem:
        view = fleet.FleetView((), (), (found.problem,))
    elif not found.groups:
        return True
    else:
        async with aiohttp.ClientSession() as http:
            access = await _scalelite_access(ctx, cloud, http)
            view = await fleet.read(
                cloud.autoscaling, cloud.ec2, http, found.groups, ctx.settings.fleet, access
            )
    allowed, lines = fleet.judge(view, action, force)
    if not (quiet and allowed):
        for line in lines:
            print(line, file=ctx.err)
    log.info(
        "fleet_checked",
        action=action,
        allowed=allowed,
        forced=force and bool(view.busy or view.unknown or view.problems),
        busy=[h.instance_id for h in view.busy],
        unknown=[h.instance_id for h in view.unknown],
    )
    return allowed


async def _scalelite_access(
    ctx: Context, cloud: _Aws, http: aiohttp.ClientSession
) -> fleet.ScaleliteAccess:
    """Scalelite from the settings, else from the stack's outputs and Domain parameter."""
    f = ctx.settings.fleet
    state = await cloud.stacks.describe(ctx.settings.stack.name)
    url = f.scalelite_url or (state.output("ScaleliteUrl") if state else "")
    configured = f.scalelite_secret.get_secret_value() if f.scalelite_secret else ""
    secret_ref = configured or (state.output("ScaleliteSecretArn") if state else "")
    domain = f.domain or (state.parameter("Domain") if state else "")
    template = f.server_url_template

    def without(why: str) -> fleet.ScaleliteAccess:
        return fleet.ScaleliteAccess(None, template, domain, why)

    if not url:
        return without("no URL (fleet.scalelite_url, or the stack's ScaleliteUrl output)")
    if not secret_ref:
        return without(
            "no secret (fleet.scalelite_secret, or the stack's ScaleliteSecretArn output)"
        )
    if "{domain" in template and not domain:
        return without("no domain for fleet.server_url_template (fleet.domain, or Domain)")
    try:
        secret = await secrets.resolve(
            secret_ref,
            setting="fleet.scalelite_secret",
            session_factory=lambda _region: cloud.session,
            give_up_after=f.timeout * 4,
        )
    except secrets.SecretError as exc:
        return without(f"its secret: {exc}")
    return fleet.ScaleliteAccess(fleet.scalelite_client(http, url, secret, f), template, domain)


async def platform_install(ctx: Context, print_only: bool) -> int:
    """``bbbctl platform install``: the controllers, Prometheus/Grafana, Loki and the
    fleet's monitoring chart, with the stack's outputs. ``--print`` shows the commands
    with $Output placeholders and reads nothing from AWS."""
    root = ctx.settings.sync.root
    releases = platform.load_releases(root)
    if print_only:
        argvs = platform.commands(releases, platform.outputs_as_placeholders())
        print(platform.render(argvs), end="", file=ctx.out)
        return 0
    async with _Aws(ctx) as cloud:
        state = await cloud.stacks.describe(ctx.settings.stack.name)
    if state is None:
        print(f"stack {ctx.settings.stack.name} does not exist", file=ctx.err)
        return 1
    try:
        argvs = platform.commands(releases, {key: value for key, value, _ in state.outputs})
    except platform.PlatformError as exc:
        print(f"bbbctl: {exc}", file=ctx.err)
        return 1
    return await platform.run(argvs, root, ctx.out)


__all__ = [
    "Context",
    "ParameterError",
    "delete",
    "deploy",
    "platform_install",
    "status",
    "sync_command",
    "validate",
]
