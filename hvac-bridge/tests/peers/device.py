#!/usr/bin/env python3
"""A Modbus TCP device for the bridge's tests (pymodbus 3.16).

Usage: device.py --port PORT --control FILE

Register map (0-based PDU addresses), in the spirit of a heat pump with a
heat-meter gateway:

holding  0      i16 ×0.1   supply_setpoint_c   45.0  (writable)
holding  1      u16        mode                2
holding  2-3    f32 ABCD   f_abcd              21.5
holding  4-5    f32 CDAB   f_cdab              21.5
holding  6-7    f32 BADC   f_badc              21.5
holding  8-9    f32 DCBA   f_dcba              21.5
holding  10-11  u32 CDAB   u_cdab              123456
holding  12     i16 ×0.1   outdoor_c           -5.5
holding  13-19  (zeros)
holding  20-21  i32 ABCD   i_abcd              -100000
input    0-1    f32 ABCD   power_kw            42.5
input    2-3    u32 ABCD   energy_kwh          1234567
input    4      i16 ×0.1   supply_c            55.2
input    5      i16 ×0.1   return_c            40.1
coil     0      pump                           on
coil     1      boost                          off
discrete 0      alarm                          on

The control file (re-read on every request) switches the behaviour:
"ok" (or absent) answers normally; "slow" answers after 2 s; "exception"
answers every request with ServerDeviceFailure (0x04).
"""

import argparse
import asyncio
import os
import struct

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def f32(value, order):
    return words(struct.pack(">f", value), order)


def u32(value, order):
    return words(struct.pack(">I", value), order)


def i32(value, order):
    return words(struct.pack(">i", value), order)


def words(be, order):
    a, b, c, d = be
    layout = {"ABCD": (a, b, c, d), "CDAB": (c, d, a, b), "BADC": (b, a, d, c), "DCBA": (d, c, b, a)}[order]
    return [layout[0] << 8 | layout[1], layout[2] << 8 | layout[3]]


def i16(value):
    return value & 0xFFFF


def holding():
    regs = [i16(450), 2]
    regs += f32(21.5, "ABCD") + f32(21.5, "CDAB") + f32(21.5, "BADC") + f32(21.5, "DCBA")
    regs += u32(123456, "CDAB")
    regs += [i16(-55)]
    regs += [0] * 7
    regs += i32(-100000, "ABCD")
    return regs


def inputs():
    return f32(42.5, "ABCD") + u32(1234567, "ABCD") + [i16(552), i16(401)]


def mode(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return "ok"


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--control", required=True)
    args = ap.parse_args()

    async def action(function_code, start_address, address, count, registers, set_values):
        m = mode(args.control)
        if m == "slow":
            await asyncio.sleep(2.0)
        elif m == "exception":
            return ExcCodes.DEVICE_FAILURE
        return None

    device = SimDevice(
        id=0,
        simdata=(
            [SimData(0, values=[True, False] + [False] * 14, datatype=DataType.BITS)],
            [SimData(0, values=[True] + [False] * 15, datatype=DataType.BITS)],
            [SimData(0, values=holding(), datatype=DataType.REGISTERS)],
            [SimData(0, values=inputs(), datatype=DataType.REGISTERS)],
        ),
        action=action,
    )
    server = ModbusTcpServer(device, address=("127.0.0.1", args.port))
    print(f"device.py: serving on 127.0.0.1:{args.port} (pid {os.getpid()})", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
