"""PyJWT sign and verify loops, one thread: what one core can do with each algorithm.

Run by the bench in a subprocess pinned to the server's core (while no server is busy):
``python -m bench.jwt_loop --algs RS256,ES256,EdDSA --seconds 2 [--rsa-bits 2048]``
prints one JSON object ``{alg: {"key", "sign_per_s", "verify_per_s", "token_bytes",
"cpu_share"}}``. Rates are per CPU second of the loop's thread (what one core does, even
when another process shares it), and ``cpu_share`` says how much of the wall time it had.

Each loop does what the server does per token: ``sign`` is ``JwtService.issue``'s
``jwt.encode`` of the same claims (a fresh ``jti`` per token) with a ``kid`` header;
``verify`` is ``JwtService.verify``'s header read and ``jwt.decode`` with the audience,
issuer, leeway and required claims (no cache). Keys: RSA ``--rsa-bits`` (2048, what the
server generates for RS256), P-256 for ES256, Ed25519 for EdDSA.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISS = AUD = "accounts-grpc"
REQUIRED = ["exp", "iat", "sub", "iss", "aud"]


def private_key(alg: str, rsa_bits: int = 2048) -> tuple[Any, str]:
    if alg.startswith("RS") or alg.startswith("PS"):
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits), \
            f"RSA {rsa_bits}"
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1()), "P-256"
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1()), "P-384"
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate(), "Ed25519"
    raise ValueError(f"no key type for {alg!r}")


def _claims() -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISS, "sub": str(uuid.uuid4()), "aud": AUD, "iat": now, "exp": now + 86400,
            "jti": str(uuid.uuid4()), "account_id": str(uuid.uuid4()), "roles": ["admin"],
            "kind": "MACHINE", "client_id": "cid_0123456789abcdef01234567", "gen": 0}


def _rate(fn: Any, seconds: float) -> tuple[float, float]:
    """(calls of ``fn`` per CPU second of this thread, the share of the wall time it had
    the CPU) over ``seconds`` after a short warm-up. Per CPU second: another process
    on the same core (the machine is shared) takes wall time, not CPU time."""
    pc, cpu = time.perf_counter, time.thread_time
    end = pc() + min(0.2, seconds / 5)
    while pc() < end:
        fn()
    n, t0, c0 = 0, pc(), cpu()
    end = t0 + seconds
    while True:
        fn()
        n += 1
        t = pc()
        if t >= end:
            used = cpu() - c0
            return n / used if used > 0 else n / (t - t0), used / (t - t0)


def measure(alg: str, seconds: float, rsa_bits: int = 2048) -> dict[str, Any]:
    key, desc = private_key(alg, rsa_bits)
    pub = key.public_key()
    base = _claims()
    headers = {"kid": "20260101-benchkid"}

    def sign() -> str:
        base["jti"] = str(uuid.uuid4())
        return jwt.encode(base, key, algorithm=alg, headers=headers)

    token = sign()

    def verify() -> None:
        jwt.get_unverified_header(token)
        jwt.decode(token, pub, algorithms=[alg], audience=AUD, issuer=ISS, leeway=30,
                   options={"require": REQUIRED})

    sign_rate, sign_share = _rate(sign, seconds)
    verify_rate, verify_share = _rate(verify, seconds)
    return {"key": desc, "sign_per_s": sign_rate, "verify_per_s": verify_rate,
            "token_bytes": len(token), "cpu_share": min(sign_share, verify_share)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--algs", default="RS256,ES256,EdDSA")
    p.add_argument("--seconds", type=float, default=2.0, help="per loop")
    p.add_argument("--rsa-bits", type=int, default=2048)
    args = p.parse_args()
    out = {}
    for alg in [a.strip() for a in args.algs.split(",") if a.strip()]:
        try:
            out[alg] = measure(alg, args.seconds, args.rsa_bits)
        except Exception as e:  # an algorithm this PyJWT/cryptography cannot do
            out[alg] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
