"""How a consumer gets objects in and out: input and output modes, first update.

Mixed into :class:`pvaflow.hpc.consumer.Consumer`.
"""

import logging

import pvaccess as pva

from .commands import FAILED
from .errors import ConfigurationError
from .publisher import ServerPublisher
from .push_input import PvasInput, RpcInput
from .push_output import PvaPutOutput, RpcOutput, ScatterOutput
from .receiver import MonitorReceiver, build_request

log = logging.getLogger(__name__)

_GETTERS = {
    pva.INT: "getInt", pva.UINT: "getUInt", pva.LONG: "getLong", pva.ULONG: "getULong",
    pva.SHORT: "getShort", pva.USHORT: "getUShort", pva.BYTE: "getByte", pva.UBYTE: "getUByte",
}


class StageIOMixin:
    def _pvas_input_type(self):
        type_object = self._call_user("getInputPvObjectType")
        if type_object is FAILED or not isinstance(type_object, pva.PvObject):
            raise ConfigurationError(
                f"input mode 'pvas' needs the input structure: processor {type(self.processor).__name__}"
                " must define getInputPvObjectType() returning a PvObject (e.g. pvaccess.NtNdArray())")
        return type_object

    def _create_publisher(self, policy):
        c = self.config
        if not self.output_channel:
            return None
        if c.output_mode == "pva":
            return PvaPutOutput(self.output_channel, c.output_args)
        if c.output_mode == "rpc":
            return RpcOutput(self.output_channel, c.output_args)
        if c.output_mode == "scatter":
            return ScatterOutput(c.output_channel, c.output_args)
        return ServerPublisher(self.server, self.output_channel, policy)

    def _start_input(self):
        """Start receiving (subclasses with other inputs override this)."""
        mode = self.config.input_mode
        if mode == "pvas":
            self.receiver = PvasInput(self.server, self.input_channel, self._input_type, self._receive,
                                      self.access_policy)
            self._first_update(self._input_type)
            log.info("serving input record %s (pvas)", self.input_channel)
            return
        if mode == "rpc":
            self.receiver = RpcInput(self.input_channel, self._receive)
            self.receiver.start()
            log.info("serving input RPC service %s", self.input_channel)
            return
        request = build_request(self.config.server_queue_size, self.config.field_request,
                                self.config.oid_field, self.config.distributor_request())
        self.receiver = MonitorReceiver(self.input_channel, request, self._receive,
                                        self._on_reconnect, self.config.input_mode)
        self.receiver.start()
        log.info("consuming %s with request %s", self.input_channel, request)

    def _first_update(self, pv):
        """Learn the input structure once: id getter, empty check, output record."""
        types = pv.getIntrospectionDict()
        field = self.config.oid_field
        node = types
        for part in field.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        getter = _GETTERS.get(node)
        self._get_id = getattr(pva.PvObject, getter) if getter else _generic_getter(field)
        self._check_empty = isinstance(types.get("value"), tuple)
        self._has_timestamp = isinstance(types.get("timeStamp"), dict)
        if self.publisher is not None:
            self._create_output(pv)  # the initial value already has the input structure
        self._first = False

    def _create_output(self, pv):
        try:
            type_object = self.processor.getOutputPvObjectType(pv)
        except Exception as exc:
            self._count_error(exc)
            type_object = None
        if type_object is not None:
            self.publisher.create_record(type_object)
        else:
            self.publisher._created = True  # the processor publishes nothing



def _generic_getter(field):
    def get(pv, _field):
        return int(pv[field])
    return get
