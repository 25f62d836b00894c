"""The outbound queue: delivery to other domains' MXes (docs/outbound.md).

- :mod:`maild.queue.wire` - reply parser and DATA encoding (the client's parser module)
- :mod:`maild.queue.client` - maild's own SMTP client protocol
- :mod:`maild.queue.runner` - the delivery workers: routing, retries, bounces
- :mod:`maild.queue.dsn` - RFC 3464 delivery status notifications
- :mod:`maild.queue.admin` - what ``maild queue`` does to entries
"""
