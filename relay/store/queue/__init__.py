"""The mail queue in SQL, by concern.

* :mod:`.records`     the values every backend shares (leased messages, attempt results, listings, selections)
* :mod:`.lifecycle`   enqueue, lease due recipients (claim), record attempts, postpone, release leases
* :mod:`.quotas`      API key quotas, counted per UTC day and month
* :mod:`.listings`    a message's recipients and attempts, message listings, per-domain queues, the sandbox
* :mod:`.control`     operator control: retry now, purge, bounce, suspend/resume a domain, cancel, resend
* :mod:`.returned`    returned mail (DSNs, complaints): find the recipient, record the report
* :mod:`.search`      message search: which index drives it, bounded subject search
* :mod:`.scheduling`  scheduled messages (send_at): list, reschedule, cancel
* :mod:`.repository`  :class:`SqlQueue`, the :class:`relay.store.protocols.QueueStore` over the database
"""

from relay.store.queue.control import (
    admin_bounce,
    cancel_message,
    purge,
    resend,
    resume_domain,
    retry_now,
    suspend_domain,
)
from relay.store.queue.lifecycle import (
    claim_due,
    enqueue,
    next_due_at,
    pending_count,
    postpone,
    record_attempts,
    release_leases,
    within_bytes,
)
from relay.store.queue.listings import (
    attempts_of,
    domain_queues,
    list_messages,
    message_record,
    message_status,
    sandbox_message,
    sandbox_messages,
    state_counts,
    summary,
)
from relay.store.queue.quotas import check_quota, key_usage
from relay.store.queue.records import (
    RESEND_RESULTS,
    Attempt,
    AttemptResult,
    BodyDeleted,
    DomainQueue,
    LeasedMessage,
    LeasedRecipient,
    MessageFilter,
    MessagePage,
    MessageRecord,
    QueueSummary,
    Quota,
    RecipientStatus,
    Resent,
    ReturnedTarget,
    Selection,
)
from relay.store.queue.repository import SqlQueue
from relay.store.queue.returned import record_returned, returned_target, targets_by_header_id
from relay.store.queue.scheduling import cancel_scheduled, reschedule, scheduled_messages
from relay.store.queue.search import MAX_SEARCH_TEXT, SUBJECT_SCAN

__all__ = [
    "Attempt",
    "AttemptResult",
    "BodyDeleted",
    "DomainQueue",
    "LeasedMessage",
    "LeasedRecipient",
    "MessageFilter",
    "MessagePage",
    "MessageRecord",
    "QueueSummary",
    "RESEND_RESULTS",
    "SUBJECT_SCAN",
    "MAX_SEARCH_TEXT",
    "Quota",
    "RecipientStatus",
    "Resent",
    "ReturnedTarget",
    "Selection",
    "SqlQueue",
    "admin_bounce",
    "attempts_of",
    "cancel_message",
    "cancel_scheduled",
    "check_quota",
    "claim_due",
    "domain_queues",
    "enqueue",
    "key_usage",
    "list_messages",
    "message_record",
    "message_status",
    "next_due_at",
    "pending_count",
    "postpone",
    "purge",
    "record_attempts",
    "record_returned",
    "release_leases",
    "reschedule",
    "resend",
    "resume_domain",
    "retry_now",
    "returned_target",
    "sandbox_message",
    "sandbox_messages",
    "scheduled_messages",
    "state_counts",
    "summary",
    "suspend_domain",
    "targets_by_header_id",
    "within_bytes",
]
