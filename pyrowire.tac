# twistd -ny pyrowire.tac: the pyrowire service configured by environment
# variables only (PYROWIRE_APP, RUN, TOPIC, PORT, REDIS_URL, ENV,
# PYROWIRE_LOG_LEVEL, PYROWIRE_LOG_FORMAT).
import os
import sys

from twisted.application.service import Application
from twisted.logger import ILogObserver

from pyrowire import logs
from pyrowire.tap import service_from

application = Application("pyrowire")
service_from({}, os.environ, app_option="PYROWIRE_APP").setServiceParent(application)
# pyrowire's log observer (level and format from the profile), as `twistd pyrowire` installs it
application.setComponent(ILogObserver, logs.Observer(sys.stdout))
