"""One SMTP transaction to the first host that takes it: per-recipient replies.

Hosts are tried in order while a failure is about the host (no connection, a
4xx greeting/EHLO/MAIL): the next MX may do better. Once recipients have been
given to a server, its replies are final for this attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiosmtplib

from relay.delivery.outcome import Reply

log = logging.getLogger(__name__)


class _NextHost(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _reply(exc: aiosmtplib.SMTPResponseException) -> Reply:
    return Reply(exc.code, " ".join(exc.message.split()))


class SmtpClient:
    def __init__(self, ehlo_name: str, connect_timeout: float, command_timeout: float) -> None:
        self.ehlo_name = ehlo_name
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout

    async def deliver(
        self, hosts: Sequence[tuple[str, int]], sender: str, recipients: Sequence[str], raw: bytes
    ) -> dict[str, Reply]:
        """Reply per recipient. A Reply with code None means no SMTP answer (transient)."""
        last = Reply(None, "no host to deliver to")
        for host, port in hosts:
            smtp = aiosmtplib.SMTP(
                hostname=host,
                port=port,
                local_hostname=self.ehlo_name,
                timeout=self.command_timeout,
                start_tls=None,  # opportunistic STARTTLS, as MTAs do by default
                validate_certs=False,
            )
            try:
                await smtp.connect(timeout=self.connect_timeout)
                return await self._transaction(smtp, sender, recipients, raw)
            except asyncio.CancelledError:
                smtp.close()  # shutting down: drop the connection, do not wait for QUIT
                raise
            except _NextHost as exc:
                last = exc.reply
            except aiosmtplib.SMTPResponseException as exc:
                last = _reply(exc)
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                last = Reply(None, f"{host}:{port}: {type(exc).__name__}: {exc}".rstrip(": "))
            finally:
                await _close(smtp)
            log.info("host %s:%d failed: %s", host, port, last)
        return {r: last for r in recipients}

    async def _transaction(
        self, smtp: aiosmtplib.SMTP, sender: str, recipients: Sequence[str], raw: bytes
    ) -> dict[str, Reply]:
        utf8 = not sender.isascii() or not all(r.isascii() for r in recipients)
        options = []
        if utf8:
            if not smtp.supports_extension("smtputf8"):
                permanent = Reply(553, "5.6.7 the receiving server does not support SMTPUTF8 addresses")
                return {r: permanent for r in recipients}
            options.append("SMTPUTF8")
        if not raw.isascii() and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        encoding = "utf-8" if utf8 else "ascii"
        try:
            await smtp.mail(sender, options=options, encoding=encoding)
        except aiosmtplib.SMTPResponseException as exc:
            reply = _reply(exc)
            if reply.code is not None and reply.code >= 500:
                return {r: reply for r in recipients}
            raise _NextHost(reply) from None
        replies: dict[str, Reply] = {}
        accepted: list[str] = []
        for rcpt in recipients:
            try:
                resp = await smtp.rcpt(rcpt, encoding=encoding)
                accepted.append(rcpt)
                replies[rcpt] = Reply(resp.code, resp.message)
            except aiosmtplib.SMTPResponseException as exc:
                replies[rcpt] = _reply(exc)
        if not accepted:
            return replies
        try:
            resp = await smtp.data(raw)
            final = Reply(resp.code, " ".join(resp.message.split()))
        except aiosmtplib.SMTPResponseException as exc:
            final = _reply(exc)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            # The message may or may not have arrived; retrying risks a duplicate, never a loss.
            final = Reply(None, f"connection lost during DATA: {type(exc).__name__}: {exc}")
        for rcpt in accepted:
            replies[rcpt] = final
        return replies


async def _close(smtp: aiosmtplib.SMTP) -> None:
    if not smtp.is_connected:
        return
    try:
        await asyncio.wait_for(smtp.quit(), timeout=5)
    except Exception:
        smtp.close()
