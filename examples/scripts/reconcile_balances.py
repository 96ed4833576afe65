"""Prove every balance equals the sum of its ledger (the setup guide's
``scripts/reconcile-balances.ts``), optionally repairing mismatches.

    REDIS_URL=redis://localhost:6379/0 python examples/scripts/reconcile_balances.py
    python examples/scripts/reconcile_balances.py --repair user_2abc user_2def

Run it by hand after an incident, or from cron (``0 */6 * * *``). Exit status: 0 when
every account adds up (after repairs), 1 otherwise, so cron's mail or your monitoring
notices. Expired holds are returned first.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sparked_credits import ConfigurationError, CreditsClient


def get_all_user_ids() -> list[str] | None:
    """PLACEHOLDER: your user ids (e.g. from Clerk's user list). None reconciles every
    account that has a ledger in the store (found by SCAN)."""
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("accounts", nargs="*", help="accounts to check (default: all)")
    parser.add_argument("--repair", action="store_true", help="fix mismatches (ledger wins)")
    parser.add_argument("--url", help="storage URL (default: REDIS_URL / UPSTASH_* env)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        credits = (
            CreditsClient(args.url, app="reconcile-script")
            if args.url
            else CreditsClient.from_env(app="reconcile-script")
        )
    except ConfigurationError as exc:
        print(
            f"error: {exc.message.split(':')[0]}: pass --url redis://localhost:6379/0 "
            "(or --url memory://), or set REDIS_URL (or UPSTASH_REDIS_REST_URL and "
            "UPSTASH_REDIS_REST_TOKEN)",
            file=sys.stderr,
        )
        return 2
    with credits:
        report = credits.reconcile_all(args.accounts or get_all_user_ids(), repair=args.repair)

    print(f"expired holds returned: {report.expired_holds}")
    print(f"accounts checked:       {report.checked}")
    print(f"mismatched:             {report.mismatched}")
    print(f"repaired:               {report.repaired}")
    for result in report.results:
        if not result.matched:
            state = "repaired" if result.repaired else "MISMATCH"
            print(
                f"  {state} {result.account}: balance {result.balance}, "
                f"ledger sum {result.ledger_sum} (difference {result.difference:+d})"
            )
    for account, error in report.errors.items():
        print(f"  ERROR {account}: {error}")
    print(f"took {report.duration_seconds:.2f}s: {'clean' if report.clean else 'NOT CLEAN'}")
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
