#!/bin/sh
# apache-md (and mod_md) MDChallengeDns01 hook: RFC 2136 dynamic DNS updates with nsupdate.
#
# A starting point: read it, adapt it, test it against your DNS before relying on it.
#
# Apache configuration:
#     MDChallengeDns01 /usr/local/bin/dns01-nsupdate.sh -c /etc/apache-md/dns01-nsupdate.conf
#     MDChallengeDns01Version 2
#
# apache-md calls it (no shell in between) as
#     dns01-nsupdate.sh [-c CONF] setup    <domain> <value>
#     dns01-nsupdate.sh [-c CONF] teardown <domain> [<value>]   (<value> with Version 2)
# For a wildcard `*.example.org`, <domain> is `example.org`. An MD with both
# `example.org` and `*.example.org` may need two TXT values under one name at
# once, so setup ADDS a record and teardown with a value deletes only that one.
#
# CONF (sh syntax, default /etc/apache-md/dns01-nsupdate.conf, optional when the
# variables come from the environment):
#     NSUPDATE_SERVER=ns1.example.org   # primary server that accepts updates (required)
#     NSUPDATE_PORT=53
#     NSUPDATE_KEY=/etc/apache-md/tsig.key  # TSIG key for `nsupdate -k` (strongly advised)
#     NSUPDATE_ZONE=example.org          # optional; nsupdate finds it from the SOA otherwise
#     NSUPDATE_TTL=60
#     NSUPDATE_WAIT=0                    # seconds to let secondaries catch up after setup
#     NSUPDATE=nsupdate                  # the binary (package bind9-dnsutils)
# Keep CONF and the key readable only by the user apache-md runs as: a TSIG key
# can change your zone.
#
# Exit status: 0 on success; anything else makes apache-md report
# `challenge-setup-failure` (setup) or log the failure (teardown).
set -eu

conf=/etc/apache-md/dns01-nsupdate.conf
if [ "${1:-}" = "-c" ]; then
    conf=${2:?"-c needs a file"}
    shift 2
fi
if [ -f "$conf" ]; then
    # shellcheck disable=SC1090
    . "$conf"
fi

usage() {
    echo "usage: $0 [-c CONF] setup <domain> <value> | teardown <domain> [<value>]" >&2
    exit 2
}

action=${1:-}
domain=${2:-}
value=${3:-}
[ -n "$action" ] && [ -n "$domain" ] || usage
case "$action" in
    setup) [ -n "$value" ] || usage ;;
    teardown) ;;
    *) usage ;;
esac

: "${NSUPDATE_SERVER:?set NSUPDATE_SERVER in $conf or the environment}"
NSUPDATE=${NSUPDATE:-nsupdate}
NSUPDATE_PORT=${NSUPDATE_PORT:-53}
NSUPDATE_TTL=${NSUPDATE_TTL:-60}
NSUPDATE_WAIT=${NSUPDATE_WAIT:-0}

domain=${domain#\*.}
domain=${domain%.}
name="_acme-challenge.$domain."

commands() {
    echo "server $NSUPDATE_SERVER $NSUPDATE_PORT"
    if [ -n "${NSUPDATE_ZONE:-}" ]; then
        echo "zone $NSUPDATE_ZONE"
    fi
    case "$action" in
        setup) echo "update add $name $NSUPDATE_TTL IN TXT \"$value\"" ;;
        teardown)
            if [ -n "$value" ]; then
                echo "update delete $name IN TXT \"$value\""
            else
                echo "update delete $name IN TXT"
            fi ;;
    esac
    echo "send"
}

if [ -n "${NSUPDATE_KEY:-}" ]; then
    commands | "$NSUPDATE" -k "$NSUPDATE_KEY"
else
    commands | "$NSUPDATE"
fi

if [ "$action" = setup ] && [ "$NSUPDATE_WAIT" -gt 0 ]; then
    sleep "$NSUPDATE_WAIT"
fi
