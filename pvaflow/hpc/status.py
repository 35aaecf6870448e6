"""The status record: its structure and how a stats dict fills it."""

import pvaccess as pva

RECEIVER_TYPES = {
    "nReceived": pva.ULONG, "nSkipped": pva.ULONG, "nEmpty": pva.ULONG, "nDuplicates": pva.ULONG,
    "nMissed": pva.ULONG, "nRejected": pva.ULONG, "nOverruns": pva.ULONG, "nIdResets": pva.ULONG,
    "nReconnects": pva.ULONG, "nMissedWhileDown": pva.ULONG, "firstId": pva.LONG, "lastId": pva.LONG,
    "receivedRate": pva.DOUBLE, "periodReceivedRate": pva.DOUBLE, "missedRate": pva.DOUBLE,
}
QUEUE_TYPES = {"maxLength": pva.LONG, "nQueued": pva.ULONG, "peak": pva.ULONG, "nRejected": pva.ULONG}
PROCESSOR_TYPES = {
    "nProcessed": pva.ULONG, "nErrors": pva.ULONG, "nHookErrors": pva.ULONG, "processedRate": pva.DOUBLE,
    "periodProcessedRate": pva.DOUBLE, "meanProcessUs": pva.DOUBLE, "latencyP50Ms": pva.DOUBLE,
    "latencyP99Ms": pva.DOUBLE, "latencyMaxMs": pva.DOUBLE, "lastError": pva.STRING,
}
PUBLISHER_TYPES = {"nPublished": pva.ULONG, "nErrors": pva.ULONG, "nRejected": pva.ULONG,
                   "nRetried": pva.ULONG, "nDropped": pva.ULONG, "waitSeconds": pva.DOUBLE,
                   "publishedRate": pva.DOUBLE}

SECTIONS = ("receiverStats", "queueStats", "processorStats", "publisherStats", "userStats")


def status_record_type(id_field, user_types):
    """Structure of the status record; ``user_types`` from getStatsPvaTypes()."""
    return {
        id_field: pva.UINT,
        "channel": pva.STRING,
        "state": pva.STRING,
        "runtime": pva.DOUBLE,
        "statusTime": pva.DOUBLE,
        "timeStamp": pva.PvTimeStamp(),
        "receiverStats": dict(RECEIVER_TYPES),
        "queueStats": dict(QUEUE_TYPES),
        "processorStats": dict(PROCESSOR_TYPES),
        "publisherStats": dict(PUBLISHER_TYPES),
        "userStats": dict(user_types) if user_types else {"none": pva.UINT},
    }


def fill_status(record, stats, user_keys):
    """Copy ``stats`` (the consumer's nested dict) into ``record``."""
    values = {k: v for k, v in stats.items() if k not in ("userStats", "final")}
    for section, types in (("receiverStats", RECEIVER_TYPES), ("queueStats", QUEUE_TYPES),
                           ("processorStats", PROCESSOR_TYPES), ("publisherStats", PUBLISHER_TYPES)):
        values[section] = {k: v for k, v in values[section].items() if k in types}
    user = stats.get("userStats") or {}
    values["userStats"] = {k: user[k] for k in user_keys if k in user}
    values["timeStamp"] = pva.PvTimeStamp(stats["statusTime"])
    record.set(values)
    return record
