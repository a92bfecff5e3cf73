"""Independent EIP-712 vector for order::tests::hash_and_signature_match_independent_vector.

Run: python3 -m venv /tmp/v && /tmp/v/bin/pip install eth-account && /tmp/v/bin/python scripts/eip712_vector.py
Prints: salt, order hash, signature (Hardhat test key #0; it holds nothing)."""
import hashlib
from eth_account import Account
from eth_account.messages import encode_typed_data
salt = int.from_bytes(hashlib.sha256(b"momentum/7/0").digest()[:8], "big") & ((1 << 53) - 1)
key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
addr = Account.from_key(key).address
msg = {"salt": salt, "maker": addr, "signer": addr,
       "tokenId": 71321045679252212594626385532706912750332728571942532289631379312455583992563,
       "makerAmount": 4500000, "takerAmount": 10000000, "side": 0, "signatureType": 0,
       "timestamp": 1735689600000, "metadata": b"\0" * 32, "builder": b"\0" * 32}
types = {"Order": [{"name": n, "type": t} for n, t in [("salt", "uint256"), ("maker", "address"), ("signer", "address"),
         ("tokenId", "uint256"), ("makerAmount", "uint256"), ("takerAmount", "uint256"), ("side", "uint8"),
         ("signatureType", "uint8"), ("timestamp", "uint256"), ("metadata", "bytes32"), ("builder", "bytes32")]]}
domain = {"name": "Polymarket CTF Exchange", "version": "2", "chainId": 137,
          "verifyingContract": "0xE111180000d2663C0091e4f400237545B87B996B"}
signed = Account.sign_message(encode_typed_data(domain, types, msg), key)
print(salt, "0x" + signed.message_hash.hex().removeprefix("0x"), "0x" + signed.signature.hex().removeprefix("0x"))
