wait = (timeToDelay) =>
  new Promise(resolve => setTimeout(resolve, timeToDelay));
