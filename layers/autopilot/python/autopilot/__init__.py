"""ops-autopilot shared code: configuration, AWS clients, events, notifications.

Imported the same way by every Lambda function (from the layer), the tests and the demo
(both put ``layers/autopilot/python`` on the path through their own configuration).
"""

__version__ = "0.1.0"
