-- wrk script for benches/tracker_load.sh: announces with varying queries.
--
-- Each request picks one of NHASH info-hashes ("ih" + 18 digits, plain
-- ASCII so no percent-encoding is needed). With probability NEW a new peer
-- (event=started) joins, otherwise a peer this thread announced before
-- re-announces (no event; a quarter of them as seeders). compact=1,
-- numwant=50. Settings come from the environment: TRB_NHASH, TRB_NEW,
-- TRB_CLOSE (1 = send "Connection: close").

local nhash = tonumber(os.getenv("TRB_NHASH") or "500")
local pnew = tonumber(os.getenv("TRB_NEW") or "0.2")
local close = os.getenv("TRB_CLOSE") == "1"

local counter = 0
local tid = 0
local peers = {}   -- known peers of this thread: {hash index, id}
local npeers = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  math.randomseed(tid * 7919 + os.time())
end

local function hash_of(i)
  return string.format("ih%018d", i)
end

local head
function request()
  if head == nil then
    head = "Host: 127.0.0.1\r\n"
    if close then head = head .. "Connection: close\r\n" end
  end
  local h, id, ev, left, port
  if npeers == 0 or math.random() < pnew then
    h = math.random(0, nhash - 1)
    npeers = npeers + 1
    id = string.format("-WK0001-%01d%011d", tid % 10, npeers)
    peers[npeers] = { h, id, 10000 + npeers % 50000 }
    port = peers[npeers][3]
    ev = "&event=started"
    left = 1000000
  else
    local p = peers[math.random(1, npeers)]
    h, id, port = p[1], p[2], p[3]
    ev = ""
    if math.random() < 0.25 then left = 0 else left = 500000 end
  end
  local path = "/announce?info_hash=" .. hash_of(h) .. "&peer_id=" .. id ..
    "&port=" .. port ..
    "&uploaded=0&downloaded=0&left=" .. left ..
    "&compact=1&numwant=50" .. ev
  return "GET " .. path .. " HTTP/1.1\r\n" .. head .. "\r\n"
end

local bad = 0
function response(status, headers, body)
  if status ~= 200 or string.find(body, "failure reason", 1, true) then
    bad = bad + 1
    if bad <= 3 then io.stderr:write("bad response: " .. status .. " " .. body .. "\n") end
  end
end
