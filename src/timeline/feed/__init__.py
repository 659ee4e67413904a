"""The integrator feed: every recorded event as a CloudEvent, paged, streamed, in Atom and by webhook.

Everything here reads the event store's notification log through
``Tracker.events_after`` and speaks the public event shape of :mod:`timeline.events`,
never the library's topics or stored bytes.
"""
