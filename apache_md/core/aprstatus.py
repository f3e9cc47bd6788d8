"""The APR status codes mod_md writes as job.json `last.status`, with apr_strerror's
words for them (`status-description`), and the ACME problem types mod_md maps to them
(md_acme.c `Problems`: status, and whether the problem says the input is wrong, which
sets the backoff to a day). md-status readers compare these numbers and words, so a
switch from mod_md must find the same ones.
"""
from __future__ import annotations

EACCES, EINVAL, ECONNREFUSED = 13, 22, 111
EGENERAL, EINCOMPLETE = 20014, 20022
TIMEUP, BADARG = 70007, 70013

STRERROR = {
    EACCES: "Permission denied",
    EINVAL: "Invalid argument",
    ECONNREFUSED: "Connection refused",
    EGENERAL: "Internal error (specific information not available)",
    EINCOMPLETE: "The given path is incomplete",
    TIMEUP: "The timeout specified has expired",
    BADARG: "Missing parameter for the specified command line option",
}

# type (after urn:ietf:params:) -> (status, input related); others are EGENERAL
ACME_PROBLEMS = {
    "acme:error:agreementRequired": (EGENERAL, True),
    "acme:error:badCSR": (EINVAL, True),
    "acme:error:badNonce": (11, False),
    "acme:error:badSignatureAlgorithm": (EINVAL, True),
    "acme:error:externalAccountRequired": (EINVAL, True),
    "acme:error:invalidContact": (BADARG, True),
    "acme:error:unsupportedContact": (EGENERAL, True),
    "acme:error:malformed": (EINVAL, True),
    "acme:error:rateLimited": (BADARG, False),
    "acme:error:rejectedIdentifier": (BADARG, True),
    "acme:error:serverInternal": (EGENERAL, False),
    "acme:error:unauthorized": (EACCES, False),
    "acme:error:unsupportedIdentifier": (BADARG, True),
    "acme:error:userActionRequired": (EGENERAL, True),
    "acme:error:badRevocationReason": (EINVAL, True),
}


def _short(problem: str) -> str:
    for prefix in ("urn:ietf:params:", "urn:"):
        if problem.startswith(prefix):
            return problem[len(prefix):].lower()
    return problem.lower()


_LOWER = {k.lower(): v for k, v in ACME_PROBLEMS.items()}


def acme_status(problem: str | None) -> int:
    """mod_md's status for an ACME problem type (problem_status_get)."""
    return _LOWER.get(_short(problem or ""), (EGENERAL, False))[0]


def input_related(problem: str | None) -> bool:
    """md_acme_problem_is_input_related: retrying soon will not help."""
    return bool(problem) and _LOWER.get(_short(problem), (0, False))[1]


def strerror(status: int) -> str:
    return STRERROR.get(status, "Internal error (specific information not available)")


CANNOT_START = 255  # the exit code of APR's child when the command cannot be executed


def exec_status(rc: int) -> int:
    """The status md_util_exec gives a command's non-zero exit: EINCOMPLETE above 127
    (a command that could not start included) or for a signal, else EGENERAL."""
    return EINCOMPLETE if rc < 0 or rc > 127 else EGENERAL
