#!/usr/bin/env python3
"""Time to CONNACK of new MQTT 3.1.1 sessions, one after another: N with clean session 0
(each a new persistent session), then N clean ones, against an mqws (or any broker) on
127.0.0.1:PORT. Usage: python3 benches/new_sessions.py PORT N  (benches/RESULTS.md, 2026-12-07 23:20)."""
import socket, struct, time, sys, statistics
def connect_pkt(cid, clean):
    body = b'\x00\x04MQTT\x04' + bytes([0x02 if clean else 0x00]) + struct.pack('>H', 60) + struct.pack('>H', len(cid)) + cid
    return bytes([0x10, len(body)]) + body
def run(port, n, clean, tag):
    ts=[]
    for i in range(n):
        cid=f'ns-{tag}-{i}'.encode()
        t=time.perf_counter()
        s=socket.create_connection(('127.0.0.1',port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(connect_pkt(cid, clean))
        b=b''
        while len(b)<4:
            c=s.recv(4-len(b))
            if not c: raise SystemExit('closed')
            b+=c
        ts.append((time.perf_counter()-t)*1000)
        assert b[0]==0x20 and b[3]==0, b
        s.sendall(b'\xe0\x00'); s.close()
    ts.sort()
    return ts
port=int(sys.argv[1]); n=int(sys.argv[2])
for clean,label in ((False,'persistent, new'),(True,'clean')):
    ts=run(port,n,clean,label.replace(' ','').replace(',',''))
    print(f"{label}: {n} connects, CONNACK p50 {ts[n//2]:.2f} ms p99 {ts[int(n*0.99)]:.2f} ms, total {sum(ts)/1000:.2f} s")
