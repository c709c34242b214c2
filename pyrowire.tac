# twistd -ny pyrowire.tac: the pyrowire service configured by environment
# variables only (PYROWIRE_APP, RUN, TOPIC, PORT, REDIS_URL, ENV).
import os

from twisted.application.service import Application

from pyrowire.tap import service_from

application = Application("pyrowire")
service_from({}, os.environ).setServiceParent(application)
