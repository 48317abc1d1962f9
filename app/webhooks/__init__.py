"""Client webhooks (Standard Webhooks) and the safe-egress clients they are sent through.

- ``outbox``: the transition listener writing one ``webhook_deliveries`` row per subscribed event,
  in the transition's own transaction;
- ``delivery``: what a try sends (signed with the ``standardwebhooks`` library) and what its
  answer means; ``app.worker.deliver`` claims due rows and sends them;
- ``secrets``: the per-team ``whsec_`` secret; ``cli``: ``imagegate webhooks secret``;
- ``validation``: the admission check of a client's webhook URL;
- ``egress``: the process's ``SafeHttp`` clients for every user-supplied URL.
"""
