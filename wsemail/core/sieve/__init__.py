"""In charge of per-user filters (issue 18): Sieve scripts (RFC 5228), the subset wsemail
runs, shared by the server (run at delivery) and the client (checked before upload, tried
on a message with `wsemail filters test`).

    script    parse a script with the maintained `sievelib` parser into wsemail's own
              tree, refusing what is not in the subset with line and column
    evaluate  run the tree on a message (`MessageView`): the actions to take

The subset: tests `header`, `address` (:all :localpart :domain), `size` (:over :under),
`exists`, `allof`, `anyof`, `not`, `true`, `false`, match types :is :contains :matches
(case-insensitive, i;ascii-casemap); actions `keep`, `fileinto`, `discard`, `redirect`,
`stop`, and `addflag` of imap4flags (\\Seen, \\Flagged); `if` / `elsif` / `else`;
`require` of "fileinto" and "imap4flags".
"""

from wsemail.core.sieve.evaluate import Action, MessageView, evaluate, view_of, view_of_mime
from wsemail.core.sieve.script import MAX_SCRIPT, Script, SieveError, parse

__all__ = [
    "MAX_SCRIPT",
    "Action",
    "MessageView",
    "Script",
    "SieveError",
    "evaluate",
    "parse",
    "view_of",
    "view_of_mime",
]
