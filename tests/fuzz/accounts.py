"""Sets up the accounts of tests/fuzz/run.sh on a fresh server: `accounts.py URL WORK_DIR`.

Registers the first account, which becomes the owner and reaches every resolver, and writes
its access token to WORK_DIR/token. The owner creates an admin and a standard user; their ids,
and one that matches nobody, go into a dictionary appended to WORK_DIR/schemathesis.toml, so
that user, updateUser, setRole and deleteUser reach existing users. The owner's own id stays
out: a password change through it would end the fuzzer's session.
"""

import json
import sys
import urllib.request

url, work = sys.argv[1], sys.argv[2]


def call(query, variables, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(url, body, headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.load(response)
    if payload.get("errors"):
        sys.exit(f"fuzz: setting up the accounts failed: {payload}")
    return payload["data"]


owner = call(
    "mutation($input: RegisterInput!) { register(input: $input) { accessToken user { role } } }",
    {
        "input": {
            "username": "fuzz-owner",
            "email": "fuzz-owner@example.com",
            "password": "quiet harbour lanterns 42",
        }
    },
)["register"]
if owner["user"]["role"] != "OWNER":
    sys.exit(f"fuzz: the first account is not the owner: {owner}")
token = owner["accessToken"]

ids = []
for role in ("ADMIN", "STANDARD"):
    name = f"fuzz-{role.lower()}"
    created = call(
        "mutation($input: CreateUserInput!) { createUser(input: $input) { id } }",
        {
            "input": {
                "username": name,
                "email": f"{name}@example.com",
                "password": "seven amber kites at dusk",
                "role": role,
            }
        },
        token,
    )
    ids.append(created["createUser"]["id"])
ids.append("00000000-0000-4000-8000-000000000000")

with open(f"{work}/token", "w") as out:
    out.write(token)
# The bindings continue the [parameters] table that closes the committed settings.
with open(f"{work}/schemathesis.toml", "a") as out:
    out.write('"Mutation.*.id" = { dictionary = "ids", probability = 0.5 }\n')
    out.write('"Query.user.id" = { dictionary = "ids", probability = 0.5 }\n')
    out.write(f"\n[dictionaries.ids]\nvalues = {json.dumps(ids)}\n")
