// A real EventSource (Node's, which follows the WHATWG spec) reading a
// Herald SSE feed: prints each event as one JSON line, and exits once it
// has seen the message with seq `until` (or after 60 s).
// Usage: node --experimental-eventsource eventsource_client.mjs URL UNTIL
const [url, until] = [process.argv[2], Number(process.argv[3])];
const source = new EventSource(url);
const print = (type) => (ev) => {
  console.log(JSON.stringify({ type, id: ev.lastEventId, data: ev.data }));
  if (type === "msg" && JSON.parse(ev.data).seq >= until) {
    source.close();
    process.exit(0);
  }
};
for (const type of ["welcome", "msg", "reset"]) source.addEventListener(type, print(type));
source.onerror = () => console.log(JSON.stringify({ type: "error", readyState: source.readyState }));
setTimeout(() => process.exit(2), 60_000);
