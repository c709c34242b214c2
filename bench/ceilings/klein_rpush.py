"""Ingest ceiling 2: a minimal Klein route doing one RPUSH of the request body with txredisapi.

    python bench/ceilings/klein_rpush.py --port PORT --redis-port RPORT [--key KEY]

``POST /queue/<topic>`` pushes the raw form body onto KEY and answers constant TwiML;
``GET /health`` answers 200. Access logging is off.
"""

import argparse

import txredisapi
from klein import Klein
from twisted.internet import reactor
from twisted.web.server import Site

TWIML = (b'<?xml version="1.0" encoding="UTF-8"?>'
         b"<Response><Message>Thanks, we got it.</Message></Response>")


class QuietSite(Site):
    noisy = False

    def log(self, request):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--key", default="ceiling:queue")
    args = parser.parse_args()
    redis = txredisapi.lazyConnectionPool("127.0.0.1", args.redis_port, poolsize=4, convertNumbers=False)
    router = Klein()
    key = args.key

    @router.route("/queue/<string:topic>", methods=["POST"])
    async def queue(request, topic):
        await redis.rpush(key, request.content.read())
        request.setHeader(b"Content-Type", b"text/xml; charset=utf-8")
        return TWIML

    @router.route("/health", methods=["GET"])
    async def health(request):
        await redis.ping()
        return b"ok"

    reactor.listenTCP(args.port, QuietSite(router.resource()), interface="127.0.0.1", backlog=1024)
    reactor.run()


if __name__ == "__main__":
    main()
