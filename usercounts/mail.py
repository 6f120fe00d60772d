"""Deliver an email: by SMTP when USERCOUNTS_SMTP_HOST is set, else as an .eml file in the outbox.

Header values are set through EmailMessage, which refuses line breaks in headers, so a plan
name from the data cannot inject headers.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import stat
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from usercounts.config import Settings


class DeliveryError(RuntimeError):
    """The message was not delivered; `permanent` is true for a 5xx answer."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class RecipientsRefused(DeliveryError):
    """The server refused some (or all) recipients; `refused` are their addresses.

    smtplib does not raise when it refuses only some: it returns them, and the message has
    gone to the others. A retry must go to the refused ones only, or the others get it twice.
    """

    def __init__(self, refused: dict[str, tuple[int, bytes]]) -> None:
        self.refused = sorted(refused)
        answers = ", ".join(
            f"{address} ({code} {reply.decode(errors='replace')!r})"
            for address, (code, reply) in sorted(refused.items())
        )
        super().__init__(
            f"SMTP refused {answers}",
            permanent=all(code >= 500 for code, _ in refused.values()),
        )


def one_line(value: object) -> str:
    """A data value made safe for a header: every run of whitespace, line breaks included,
    becomes one space (EmailMessage would refuse a line break outright)."""
    return " ".join(str(value).split())


def to_addresses(message: EmailMessage) -> list[str]:
    """The addresses of the message's To header, as SMTP takes them (our messages have no
    Cc or Bcc): what a RecipientsRefused's `refused` are compared with."""
    to = message["To"]
    return [address.addr_spec for address in to.addresses] if to else []


def smtp_password(settings: Settings) -> str | None:
    """The SMTP password from the environment, or from a file only its owner can read."""
    if settings.smtp_password is not None:
        return settings.smtp_password.get_secret_value()
    path = settings.smtp_password_file
    if path is None:
        return None
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(
            f"{path} is readable by others (mode {stat.filemode(mode)}): chmod 600 it"
        )
    return path.read_text().strip()


def deliver(
    settings: Settings,
    message: EmailMessage,
    text: str | None = None,
    to_addrs: list[str] | None = None,
) -> str:
    """Send or file one message; return where it went. Raises DeliveryError on failure,
    RecipientsRefused when the server refused some recipients (the others have it).

    text: the message as already serialized (notify logs each message's text): the outbox
    file is then that text, not a second serialization of the message.
    to_addrs: the SMTP envelope's recipients when not every address of the headers (a retry
    to those an earlier attempt missed); an outbox file is the message as it is.
    """
    # RFC 5322 requires From and Date; Message-ID names the outbox file.
    if "Message-ID" not in message or "From" not in message or "Date" not in message:
        text = None  # the text lacks the headers added here
    if "Message-ID" not in message:
        message["Message-ID"] = make_msgid(domain="usercounts")
    if "From" not in message:
        message["From"] = settings.mail_from
    if "Date" not in message:
        message["Date"] = format_datetime(datetime.now(UTC))
    if settings.smtp_host:
        return _send_smtp(settings, message, to_addrs)
    return str(_write_outbox(settings.outbox_path, message, text))


def _send_smtp(settings: Settings, message: EmailMessage, to_addrs: list[str] | None) -> str:
    try:
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds
        ) as smtp:
            if settings.smtp_starttls:
                # verify the server's certificate (smtplib's default context does not)
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                smtp.login(settings.smtp_user, smtp_password(settings) or "")
            refused = smtp.send_message(message, to_addrs=to_addrs)
    except smtplib.SMTPResponseException as exc:
        # 4xx: try again later; 5xx: the server refused for good (still retried next run).
        raise DeliveryError(
            f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", permanent=exc.smtp_code >= 500
        ) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        raise RecipientsRefused(exc.recipients) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP {settings.smtp_host}:{settings.smtp_port}: {exc}") from exc
    if refused:
        raise RecipientsRefused(refused)
    return f"smtp://{settings.smtp_host}:{settings.smtp_port}"


def _write_outbox(outbox: Path, message: EmailMessage, text: str | None = None) -> Path:
    """Write an RFC 5322 .eml file named after the Message-ID, atomically: `text` when
    given (the message serialized already), else the message serialized now.

    An outbox that cannot be written (a file in its place, no permission, a full disk) is a
    failed delivery, as an SMTP server that cannot be reached: retried by the next run."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in message["Message-ID"])
    path = outbox / f"{name.strip('_')}.eml"
    tmp = path.with_suffix(".eml.tmp")
    try:
        outbox.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(text.encode() if text is not None else message.as_bytes())
        os.replace(tmp, path)
    except OSError as exc:
        raise DeliveryError(f"outbox {outbox}: {exc.strerror or exc}") from exc
    return path
