// A TON client this project did not write (@ton/ton's TonClient, @ton/crypto), used unmodified
// against the chain server: read a balance, run get-methods, send a transfer from a standard v4r2
// wallet, find the resulting transaction. Prints one JSON object.
// usage: node toncenter_client.js ENDPOINT "24 words" DEST_ADDRESS
const { TonClient, WalletContractV4, internal } = require("@ton/ton");
const { mnemonicToPrivateKey } = require("@ton/crypto");
const { Address, toNano } = require("@ton/core");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

(async () => {
  const [endpoint, words, destText] = process.argv.slice(2);
  const client = new TonClient({ endpoint: endpoint + "/api/v2/jsonRPC" });
  const key = await mnemonicToPrivateKey(words.split(" "));
  const wallet = client.open(WalletContractV4.create({ workchain: 0, publicKey: key.publicKey }));
  const dest = Address.parse(destText);
  const out = { address: wallet.address.toRawString() };
  out.balance = (await client.getBalance(wallet.address)).toString();
  out.deployed_before = await client.isContractDeployed(wallet.address);
  const seqno = await wallet.getSeqno();
  const mcBefore = (await client.getMasterchainInfo()).latestSeqno;
  await wallet.sendTransfer({
    seqno, secretKey: key.secretKey,
    messages: [internal({ to: dest, value: toNano("1.5"), bounce: false, body: "hello from @ton/ton" })],
  });
  for (let i = 0; i < 200 && (await wallet.getSeqno()) === seqno; i++) await sleep(50);
  out.seqno_after = await wallet.getSeqno();
  out.mc_advanced = (await client.getMasterchainInfo()).latestSeqno > mcBefore;
  const pk = await client.runMethod(wallet.address, "get_public_key");
  out.public_key = pk.stack.readBigNumber().toString(16).padStart(64, "0");
  const txs = await client.getTransactions(dest, { limit: 10 });
  const tx = txs.find((t) => t.inMessage && t.inMessage.info.type === "internal" &&
                             t.inMessage.info.src.equals(wallet.address));
  if (tx) {
    const body = tx.inMessage.body.beginParse();
    body.loadUint(32);
    out.found = { lt: tx.lt.toString(), hash: tx.hash().toString("hex"), value: tx.inMessage.info.value.coins.toString(),
                  comment: body.loadStringTail() };
  }
  out.dest_balance = (await client.getBalance(dest)).toString();
  out.wallet_state = (await client.getContractState(wallet.address)).state;
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e && e.stack ? e.stack : e); process.exit(1); });
