// The three queue acknowledgement specs of @stomp/stompjs v7.1.1, ported to node:test.
//
// Source: https://github.com/stomp-js/stompjs/blob/7.1.1/spec/unit/ack.spec.js
// (commit 4eaed27648a85e4ac7464de5b06ce75856ce46c3, Apache License 2.0, (c) the
// stomp-js authors), with the helpers it uses from spec/helpers/connect-helpers.js
// and content-helpers.js. What changed: Jasmine's describe/it/beforeEach/afterEach
// and done callbacks became node:test's and promises, `expect(...).toEqual` became
// assert.strictEqual, and TEST.url comes from STOMPRELAY_URL (the relay under test).
// The specs themselves (destinations, bodies, ack modes, counts, the 100 ms wait)
// are as upstream. Run: STOMPRELAY_URL=ws://127.0.0.1:15674/ws node --test ack.spec.mjs

import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { Client } from '@stomp/stompjs';
import { WebSocket } from 'ws';

Object.assign(globalThis, { WebSocket });

const TEST = {
  login: 'guest',
  password: 'guest',
  url: process.env.STOMPRELAY_URL ?? 'ws://localhost:15674/ws',
  timeout: 10000,
};

let id = 0;

function stompClient() {
  const myId = ++id;
  return new Client({
    connectHeaders: { login: TEST.login, passcode: TEST.password },
    brokerURL: TEST.url,
    debug: (str) => {
      if (process.env.STOMP_DEBUG === '1') console.log(`CLIENT ${myId}: ${str}`);
    },
    reconnectDelay: 0,
  });
}

async function disconnectStomp(client) {
  if (client) {
    await client.deactivate();
  }
}

function randomText() {
  return '' + Math.random();
}

function connected(client) {
  return new Promise((done) => {
    client.onConnect = () => done();
    client.activate();
  });
}

describe('Stomp Acknowledgement (RabbitMQ specific queue destination)', () => {
  let client01;
  let client02;

  beforeEach(async () => {
    client01 = stompClient();
    await connected(client01);
  });

  beforeEach(async () => {
    client02 = stompClient();
    await connected(client02);
  });

  afterEach(async () => {
    await disconnectStomp(client01);
    await disconnectStomp(client02);
  });

  it('Should deliver to other client if nacked from one', { timeout: TEST.timeout }, () =>
    new Promise((done) => {
      const queueDestination = '/queue/test01';
      let receivedCount = 0;
      const body = randomText();

      const setUpSubscription = function (client) {
        const onMessage = function (message) {
          if (message.body !== body) {
            return;
          }

          receivedCount++;

          if (receivedCount < 3) {
            message.nack();
            return;
          }

          message.ack();
          done();
        };

        client.subscribe(queueDestination, onMessage, { ack: 'client' });
      };

      setUpSubscription(client01);
      setUpSubscription(client02);

      client01.publish({ destination: queueDestination, body: body });
    }));

  it('Should deliver to other client if connection drops before ack', { timeout: TEST.timeout }, () =>
    new Promise((done) => {
      const queueDestination = '/queue/test01';
      let receivedCount = 0;
      const body = randomText();

      const setUpSubscription = function (client) {
        const onMessage = function (message) {
          if (message.body !== body) {
            return;
          }

          receivedCount++;

          if (receivedCount === 1) {
            client.deactivate();
            return;
          }

          message.ack();
          done();
        };

        client.subscribe(queueDestination, onMessage, { ack: 'client' });
      };

      setUpSubscription(client01);
      setUpSubscription(client02);

      client01.publish({ destination: queueDestination, body: body });
    }));

  it('Should not redeliver after ack', { timeout: TEST.timeout }, () =>
    new Promise((done, fail) => {
      const queueDestination = '/queue/test01';
      let receivedCount = 0;
      const body = randomText();

      const setUpSubscription = function (client) {
        const onMessage = function (message) {
          if (message.body !== body) {
            return;
          }

          receivedCount++;

          message.ack();
          client.deactivate();

          setTimeout(function () {
            try {
              assert.strictEqual(receivedCount, 1);
              done();
            } catch (err) {
              fail(err);
            }
          }, 100);
        };

        client.subscribe(queueDestination, onMessage, { ack: 'client' });
      };

      setUpSubscription(client01);
      setUpSubscription(client02);

      client01.publish({ destination: queueDestination, body: body });
    }));
});
