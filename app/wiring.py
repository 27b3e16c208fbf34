"""The composition root: everything one process builds at start-up (`build_state`), the only
code that knows every feature; `app.main` runs it in the lifespan, the CLI runs it too."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient

from app.api_keys.repository import ApiKeyRepository
from app.api_keys.service import ApiKeyService
from app.audit.repository import AuditRepository
from app.audit.service import AuditService
from app.auth.admins import AdminRepository
from app.auth.attempts import LoginAttemptRepository
from app.auth.cache import AuthCache
from app.auth.passwords import PasswordHasher
from app.auth.rate_limit import LoginLimiter
from app.auth.revocations import RevocationRepository
from app.auth.service import AuthService
from app.auth.tokens import TokenManager
from app.events.publisher import EventPublisher
from app.events.store import EventStore
from app.kit.db import make_client
from app.kit.events import EventHook
from app.kit.faults import FaultInjector
from app.kit.keys import KeyRing
from app.kit.metrics import Metrics
from app.kit.settings import Settings
from app.kit.store import Database
from app.kit.watch import LocalWrites
from app.mail.backends import mailer_from_settings
from app.mail.outbox import OutboxRepository
from app.mail.worker import MailPolicy, MailWorker
from app.members.invitations import InvitationRepository
from app.members.mail import InvitationMail
from app.members.service import TeamService
from app.members.steps import KINDS as TEAM_KINDS
from app.members.steps import TeamSteps
from app.members.tokens import InvitationTokens
from app.organizations.lifecycle import LifecycleService
from app.organizations.moves import MoveRecords, Moves
from app.organizations.repository import OrganizationRepository
from app.organizations.service import OrganizationService
from app.organizations.steps import KINDS, OrganizationSteps
from app.organizations.team import TeamRepository
from app.recovery.limit import ResetLimiter
from app.recovery.mail import KIND as RESET_KIND
from app.recovery.mail import ResetMail
from app.recovery.repository import ResetRepository
from app.recovery.service import RecoveryService
from app.recovery.tokens import ResetTokens
from app.sessions.repository import SessionRepository
from app.sessions.service import SessionService
from app.sessions.tokens import RefreshTokens
from app.tenancy.claims import ClaimRepository
from app.tenancy.collections import TenantCollections
from app.tenancy.context import OperationContext
from app.tenancy.operations import OperationRepository
from app.tenancy.placement import Clusters, PlacementCounts, Topology
from app.tenancy.reconciler import Reconciler
from app.webhooks.service import Webhooks


@dataclass(slots=True)
class Repositories:
    """Every repository over the process's database. Only this module hands them out, each to
    the services that use it; start-up creates their indexes; tests may read them."""

    orgs: OrganizationRepository
    team: TeamRepository
    admins: AdminRepository
    claims: ClaimRepository
    ops: OperationRepository
    tenants: TenantCollections
    placements: PlacementCounts
    moves: MoveRecords
    login_attempts: LoginAttemptRepository
    revocations: RevocationRepository
    api_keys: ApiKeyRepository
    audit: AuditRepository
    invitations: InvitationRepository
    outbox: OutboxRepository
    sessions: SessionRepository
    resets: ResetRepository
    events: EventStore

    @classmethod
    def over(cls, db: Database, clusters: Clusters | None = None) -> Repositories:
        """Over the control database `db`; tenants on `clusters` (default: all in `db`)."""
        if clusters is None:
            clusters = Clusters(db.client, Topology.single(db.name), make=None)
        return cls(
            orgs=OrganizationRepository(db),
            team=TeamRepository(db),
            admins=AdminRepository(db),
            claims=ClaimRepository(db),
            ops=OperationRepository(db),
            tenants=TenantCollections(clusters),
            placements=PlacementCounts(db),
            moves=MoveRecords(db),
            login_attempts=LoginAttemptRepository(db),
            revocations=RevocationRepository(db),
            api_keys=ApiKeyRepository(db),
            audit=AuditRepository(db),
            invitations=InvitationRepository(db),
            outbox=OutboxRepository(db),
            sessions=SessionRepository(db),
            resets=ResetRepository(db),
            events=EventStore(db),
        )

    async def ensure_indexes(self) -> None:
        """Create every index the service relies on (idempotent; run at start-up)."""
        await self.orgs.ensure_indexes()
        await self.admins.ensure_indexes()
        await self.claims.ensure_indexes()
        await self.ops.ensure_indexes()
        await self.login_attempts.ensure_indexes()
        await self.revocations.ensure_indexes()
        await self.api_keys.ensure_indexes()
        await self.audit.ensure_indexes()
        await self.invitations.ensure_indexes()
        await self.outbox.ensure_indexes()
        await self.sessions.ensure_indexes()
        await self.events.ensure_indexes()
        await self.resets.ensure_indexes()
        await self.moves.ensure_indexes()


@dataclass(slots=True)
class AppState:
    """The process's client, repositories and services."""

    settings: Settings
    metrics: Metrics
    client: AsyncMongoClient[dict[str, Any]]
    repos: Repositories
    hasher: PasswordHasher
    tokens: TokenManager
    orgs: OrganizationService
    auth: AuthService
    reconciler: Reconciler
    audit: AuditService
    api_keys: ApiKeyService
    events: EventHook
    team: TeamService
    mail: MailWorker
    sessions: SessionService
    recovery: RecoveryService
    lifecycle: LifecycleService
    webhooks: Webhooks
    moves: Moves
    publisher: EventPublisher
    auth_cache: AuthCache

    async def prepare(self) -> None:
        """Start-up, before serving: indexes, what the store can do, and the upgrade of records
        written by an older release (idempotent; replicas may run it at once)."""
        await self.repos.ensure_indexes()
        await self.webhooks.ensure_indexes()
        await self.orgs.probe_store()
        await self.repos.team.upgrade_v1()
        await self.repos.orgs.upgrade_v2()
        await self.repos.orgs.upgrade_placement(self.repos.tenants.clusters.topology.default)
        if not await self.repos.placements.counts():  # first start with placement: count once
            await self.repos.placements.set_all(await self.repos.orgs.placement_counts())


Client = AsyncMongoClient[dict[str, Any]]


def build_state(
    settings: Settings, client: Client, metrics: Metrics, *, owner: str = "api"
) -> AppState:
    """Wire the stores and services of one process over `client` (the HTTP service and the
    CLI alike); `owner` names the process in the operations it holds."""
    topology = Topology.of(settings)
    clusters = Clusters(client, topology, make=lambda url: make_client(url, settings))
    repos = Repositories.over(client[settings.mongodb_db], clusters)
    events = EventHook()
    ctx = OperationContext(
        settings=settings,
        owner=f"{owner}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
        fault=FaultInjector(settings.fault_point_set),
        events=events,
    )
    hasher = PasswordHasher(rounds=settings.bcrypt_rounds, workers=settings.hash_pool_size)
    hasher.observers.append(metrics.hash_wait.observe)
    metrics.hash_queue.set_function(lambda: hasher.queued)
    keys = KeyRing.from_settings(settings)
    tokens = TokenManager(
        keys=keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        expires_minutes=settings.jwt_expires_minutes,
        remember=settings.auth_cache_max_entries if settings.auth_cache else 0,
    )
    audit_log = AuditService(repos.audit, retention_days=settings.audit_retention_days)
    audit_log.error_observers.append(metrics.observe_db_error)
    steps = OrganizationSteps(
        repos.orgs,
        repos.admins,
        repos.claims,
        repos.tenants,
        events,
        team=repos.team,
        invitations=repos.invitations,
        api_keys=repos.api_keys,
        counts=repos.placements,
    )
    invitation_tokens = InvitationTokens(keys)
    invitation_mail = InvitationMail(
        repos.invitations, repos.team, invitation_tokens, base_url=settings.public_base_url
    )
    reset_mail = ResetMail(
        repos.resets,
        repos.admins,
        repos.team,
        ResetTokens(keys),
        base_url=settings.public_base_url,
        ttl_minutes=settings.password_reset_ttl_minutes,
    )
    mail = MailWorker(
        repos.outbox,
        mailer_from_settings(settings),
        {"invitation": invitation_mail.compose, RESET_KIND: reset_mail.compose},
        sender=settings.mail_from,
        owner=ctx.owner,
        policy=MailPolicy.from_settings(settings),
    )
    team_steps = TeamSteps(
        repos.team, repos.admins, repos.invitations, repos.outbox, mail_queued=mail.kick
    )
    moves = Moves(
        orgs=repos.orgs, ops=repos.ops, records=repos.moves, tenants=repos.tenants,
        counts=repos.placements, ctx=ctx, audit=audit_log,
    )  # fmt: skip
    reconciler = Reconciler(
        repos.ops,
        # Each kind of operation is finished or undone by the feature that owns it.
        {
            **{kind: steps.reconcile for kind in KINDS},
            "move": moves.reconcile,
            **{kind: team_steps.reconcile for kind in TEAM_KINDS},
        },
        ctx,
        observers=[metrics.observe_reconcile],
        error_observers=[metrics.observe_db_error],
    )
    events.subscribe(audit_log.on_event)  # the audit log is the first consumer of events
    orgs = OrganizationService(
        orgs=repos.orgs,
        admins=repos.admins,
        claims=repos.claims,
        ops=repos.ops,
        tenants=repos.tenants,
        steps=steps,
        ctx=ctx,
        hasher=hasher,
        audit=audit_log,
    )
    sessions = SessionService(
        sessions=repos.sessions,
        team=repos.team,
        revocations=repos.revocations,
        tokens=tokens,
        refresh=RefreshTokens(keys),
        audit=audit_log,
        settings=settings,
    )
    auth_cache = AuthCache(
        repos.team.col,
        repos.revocations.col,
        enabled=settings.auth_cache,
        max_entries=settings.auth_cache_max_entries,
        max_lag_ms=settings.auth_cache_max_lag_ms,
        local=LocalWrites.of(client),
        metrics=metrics,
    )
    auth = AuthService(
        team=repos.team,
        sessions=sessions,
        admins=repos.admins,
        revocations=repos.revocations,
        hasher=hasher,
        tokens=tokens,
        limiter=LoginLimiter(repos.login_attempts, settings),
        audit=audit_log,
        events=events,
        cache=auth_cache,
    )
    publisher = EventPublisher(client[settings.mongodb_db], owner=ctx.owner)
    return AppState(
        settings=settings,
        metrics=metrics,
        client=client,
        repos=repos,
        hasher=hasher,
        tokens=tokens,
        orgs=orgs,
        auth=auth,
        reconciler=reconciler,
        moves=moves,
        audit=audit_log,
        api_keys=ApiKeyService(repos.api_keys, audit_log, events, orgs=repos.orgs),
        events=events,
        team=TeamService(
            team=repos.team,
            admins=repos.admins,
            invitations=repos.invitations,
            ops=repos.ops,
            steps=team_steps,
            tokens=invitation_tokens,
            hasher=hasher,
            auth=auth,
            audit=audit_log,
            events=events,
            ctx=ctx,
        ),
        mail=mail,
        sessions=sessions,
        recovery=RecoveryService(
            resets=repos.resets,
            admins=repos.admins,
            team=repos.team,
            outbox=repos.outbox,
            limiter=ResetLimiter(repos.login_attempts, settings),
            orgs=orgs,
            sessions=sessions,
            hasher=hasher,
            audit=audit_log,
            mail_queued=mail.kick,
        ),
        publisher=publisher,
        auth_cache=auth_cache,
        webhooks=Webhooks(
            settings=settings,
            db=client[settings.mongodb_db],
            events=repos.events,
            metrics=metrics,
            audit=audit_log,
            owner=ctx.owner,
        ),
        lifecycle=LifecycleService(
            orgs=orgs,
            repo=repos.orgs,
            team=repos.team,
            tenants=repos.tenants,
            admins=repos.admins,
            audit=audit_log,
            events=events,
        ),
    )
