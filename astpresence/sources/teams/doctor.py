"""``astpresence doctor``'s Teams checks: the app's token, the permissions it carries,
and who in ``[teams.users]`` resolves. Read-only: nothing is set in Teams."""

from __future__ import annotations

from astpresence.sources.msgraph import RemoteError
from astpresence.sources.plugin import DoctorCheck
from astpresence.sources.teams.directory import TeamsDirectory
from astpresence.sources.teams.graph import TeamsGraph, missing, required
from astpresence.sources.teams.settings import TeamsSettings

CONSENT = ("in Entra ID, App registrations > the app > API permissions: add the Microsoft "
           "Graph application permission(s) {} and grant admin consent")


async def check(settings: TeamsSettings) -> list[DoctorCheck]:
    graph = TeamsGraph(settings)
    directory = TeamsDirectory(settings.users)
    try:
        try:
            await graph.bearer()
        except RemoteError as exc:
            where = (f"environment variable {settings.secret.env}" if settings.secret.env
                     else f"file {settings.secret.file}")
            return [DoctorCheck("teams token", False, str(exc),
                                f"check [teams] tenant and client_id, and the client secret in "
                                f"the {where} (app secrets expire)")]
        checks = [DoctorCheck("teams token", True, f"a token for {settings.tenant}")]
        lacking = missing(settings, graph.stats)
        granted = sorted(graph.stats.roles or ())
        checks.append(DoctorCheck(
            "teams permissions", not lacking,
            f"granted: {', '.join(granted) or 'none'}; needed: "
            f"{', '.join(sorted(required(settings)))}",
            CONSENT.format(", ".join(lacking)) if lacking else ""))
        await directory.resolve(graph)
        failed = [f"{uid} ({directory.refs[uid]}): {directory.errors.get(uid, '?')}"
                  for uid in directory.unresolved]
        checks.append(DoctorCheck(
            "teams users", not failed,
            f"{len(directory.ids())} of {len(directory.refs)} resolved"
            + (f"; not: {'; '.join(failed[:5])}" if failed else ""),
            "correct the UPN in [teams.users], or give the object id" if failed else ""))
        checks.append(DoctorCheck(
            "teams notifications", True,
            f"to {settings.notification_url} (Graph checks it when the daemon subscribes)"
            if settings.notification_url else
            f"off: Teams is polled every {settings.poll:g} s (set notification_url for "
            "changes within seconds)"))
        return checks
    finally:
        await graph.close()
