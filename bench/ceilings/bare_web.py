"""Ingest ceiling 1: a bare twisted.web resource answering constant TwiML to any request.

    python bench/ceilings/bare_web.py --port PORT

No parsing, no signature, no Redis: the cost of Twisted's HTTP/1.1 server alone.
Access logging is off (as in pyrowire's site).
"""

import argparse

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

TWIML = (b'<?xml version="1.0" encoding="UTF-8"?>'
         b"<Response><Message>Thanks, we got it.</Message></Response>")


class Constant(Resource):
    isLeaf = True

    def render(self, request):
        request.setHeader(b"Content-Type", b"text/xml; charset=utf-8")
        return TWIML


class QuietSite(Site):
    noisy = False

    def log(self, request):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    reactor.listenTCP(args.port, QuietSite(Constant()), interface="127.0.0.1", backlog=1024)
    reactor.run()


if __name__ == "__main__":
    main()
