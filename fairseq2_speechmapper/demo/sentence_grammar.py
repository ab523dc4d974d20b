"""A deterministic generator of everyday English sentences for the large demo
speech corpus.

All text here is self-written for this package (no third-party text): sentence
templates with slot vocabularies (people, places, objects, times, actions),
filled by a seeded random generator. Numbers, prices and clock times are spelled
out, so a transcript needs no normalisation beyond case and punctuation.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Final

from fairseq2_speechmapper.demo.corpus import normalize_transcript

_ONES: Final = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()  # fmt: skip

_TENS: Final = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """``42`` -> ``forty-two``, ``305`` -> ``three hundred and five`` (0-999)."""
    if not 0 <= n < 1000:
        raise ValueError(f"{n} is out of range.")

    if n < 20:
        return _ONES[n]

    if n < 100:
        tens, ones = divmod(n, 10)

        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")

    hundreds, rest = divmod(n, 100)

    words = f"{_ONES[hundreds]} hundred"

    return f"{words} and {number_to_words(rest)}" if rest else words


def _clock_time(rng: random.Random) -> str:
    hour = rng.randint(1, 12)

    hour_words = number_to_words(hour)

    next_hour_words = number_to_words(hour % 12 + 1)

    form = rng.randrange(9)
    if form == 0:
        return f"at {hour_words} o'clock"
    if form == 1:
        return f"at half past {hour_words}"
    if form == 2:
        return f"at a quarter past {hour_words}"
    if form == 3:
        return f"at a quarter to {next_hour_words}"
    if form == 4:
        return f"at {rng.choice(['five', 'ten', 'twenty', 'twenty-five'])} past {hour_words}"
    if form == 5:
        return f"at {rng.choice(['five', 'ten', 'twenty'])} to {next_hour_words}"
    if form == 6:
        return f"at {hour_words} {rng.choice(['fifteen', 'thirty', 'forty-five', 'twenty', 'fifty'])}"
    if form == 7:
        return f"at {hour_words}"

    return rng.choice(["at noon", "at midnight", "at about {h}", "just after {h}", "just before {h}"]).format(
        h=hour_words
    )


def _price(rng: random.Random) -> str:
    amount = number_to_words(rng.choice([rng.randint(2, 20), rng.randint(2, 99)]))

    currency = rng.choice(["pounds", "euros", "dollars"])

    if rng.random() < 0.2:
        return f"{amount} {currency} fifty"

    return f"{amount} {currency}"


def _digits(rng: random.Random) -> str:
    return " ".join(_ONES[rng.randrange(10)] for _ in range(rng.choice([3, 4])))


_GENERATED: Final[dict[str, Callable[[random.Random], str]]] = {
    "clock": _clock_time,
    "price": _price,
    "digits": _digits,
    "num_small": lambda rng: number_to_words(rng.randint(2, 12)),
    "num_big": lambda rng: number_to_words(rng.randint(13, 99)),
    "num_minutes": lambda rng: number_to_words(rng.choice([5, 10, 15, 20, 25, 30, 40, 45, 50])),
    "age": lambda rng: number_to_words(rng.randint(4, 95)),
    "house_number": lambda rng: number_to_words(rng.randint(1, 240)),
    "room_number": lambda rng: number_to_words(rng.randint(1, 40) + 100 * rng.randint(0, 3)),
}


def _words(text: str) -> list[str]:
    return [w.strip() for w in text.split("|")]


_NAMES: Final = _words(
    "Anna | Tom | Maria | David | Sarah | James | Lucy | Peter | Emma | Daniel | Rachel | Michael | Helen | Robert | "
    "Laura | Simon | Kate | Oliver | Grace | Henry | Sophie | Jack | Alice | George | Ruth | Adam | Clara | Martin | "
    "Julia | Ben | Nina | Paul | Rosa | Frank | Eva | Sam | Olivia | Leo | Hannah | Victor | Irene | Carl | Megan | "
    "Arthur | Zoe | Hugo | Fiona | Ivan | Lily | Owen | Priya | Omar | Mei | Tariq | Elena | Joseph | Amy | Lewis | "
    "Bridget | Patrick | Yusuf | Ingrid | Felix | Agnes | Marcus | Wendy | Harold | Nadia"
)

_RELATIVES: Final = _words(
    "brother | sister | aunt | uncle | cousin | grandmother | grandfather | neighbour | best friend | colleague | "
    "flatmate | daughter | son | niece | nephew | godmother | stepfather | old school friend"
)

_PEOPLE: Final = [f"my {r}" for r in _RELATIVES] + _words(
    "the new teacher | our neighbour | the bus driver | the doctor | my boss | the landlord | the waiter | "
    "the old lady upstairs | the man from the bakery | a friend of mine | the postman | the nurse | the caretaker | "
    "the librarian | the coach | the plumber | the girl next door | our guide"
)

_THINGS: Final = _words(
    "the red umbrella | a pair of gloves | the spare key | an old suitcase | the blue scarf | a box of matches | "
    "the shopping list | a birthday card | the torch | her reading glasses | his wallet | the car keys | a library book | "
    "a small parcel | the photo album | a jar of honey | the map of the town | a woolly hat | the hairdryer | "
    "the screwdriver | a bag of apples | the green notebook | the tape measure | a bunch of flowers | the remote control | "
    "an empty bottle | the bicycle pump | a warm jumper | the picnic blanket | the old radio | a paper bag | the sewing box | "
    "the dog's lead | a tin of paint | the front door key | the calendar | a pair of boots | the recipe book | "
    "the toolbox | a packet of biscuits | the laptop charger | a loaf of bread | the gardening gloves | the kitchen scissors | "
    "an envelope full of receipts | the football | the silver bracelet | a wooden spoon | the water jug | a cardboard box | "
    "the camping stove | a roll of tape | the ironing board | the chess set | a fishing rod | the baby's blanket | "
    "a cushion | the passport | the bus timetable | a basket of plums | the pencil case"
)

_PLURAL_THINGS: Final = _words(
    "apples | chairs | books | plates | candles | letters | tickets | eggs | boxes | cups | pencils | towels | photos | "
    "bottles of water | potatoes | envelopes | light bulbs | paper cups | sandwiches | oranges | blankets | pillows | "
    "glasses | forks | spoons | buckets | jars of jam | loaves of bread | bags of sand | flower pots | tins of soup | "
    "balloons | folders | coat hangers | batteries | maps | muffins | spare tyres | stamps | posters"
)

_TOWN_PLACES: Final = _words(
    "the station | the post office | the library | the market | the bank | the swimming pool | the town hall | "
    "the bakery | the hospital | the museum | the cinema | the bus stop | the supermarket | the pharmacy | the school | "
    "the church | the bridge | the harbour | the car park | the sports centre | the hotel | the petrol station | "
    "the old mill | the football ground | the fire station | the theatre | the garden centre | the playground | "
    "the police station | the dentist | the town square | the castle | the bowling alley | the ferry terminal | "
    "the village shop | the health centre"
)

_ROOMS: Final = _words(
    "kitchen | living room | bathroom | attic | cellar | garage | hallway | spare bedroom | garden shed | office | "
    "dining room | laundry room | conservatory | nursery | study"
)

_PLACE_REL: Final = _words(
    "under the kitchen table | behind the sofa | on the windowsill | next to the front door | in the garden | "
    "near the old shed | by the fireplace | on the back steps | at the bottom of the garden | in the hallway | "
    "inside the wardrobe | on top of the fridge | in the glove box | under the bed | behind the curtains | "
    "in the laundry basket | on the bottom shelf | next to the bins | in the car | on the bench by the gate | "
    "in the drawer by the sink | on the piano | under a pile of newspapers | in the pocket of my coat"
)

_SURFACES: Final = _words(
    "the kitchen table | the top shelf | the windowsill | the back seat | the bottom step | the bench outside | "
    "the piano | the counter | the desk by the window | the tray | the garden wall | the floor of the garage"
)

_PAST_TIMES: Final = _words(
    "yesterday | last night | last weekend | on Monday | two days ago | this morning | last summer | after lunch | "
    "before breakfast | on the way home | last Friday evening | a week ago | on Sunday afternoon | last month | "
    "during the holidays | at the weekend | earlier today | the day before yesterday | in the spring | on Tuesday night"
)

_FUTURE_TIMES: Final = _words(
    "tomorrow | next week | on Saturday | tomorrow morning | after work | next month | this evening | later today | "
    "in the spring | at the weekend | on Thursday afternoon | before the holidays | next summer | on Friday night | "
    "the day after tomorrow | in a few days | first thing tomorrow | on Wednesday"
)

_WEEKDAYS: Final = _words("Monday | Tuesday | Wednesday | Thursday | Friday | Saturday | Sunday")

_PAST_VERBS: Final = _words(
    "found | bought | lost | borrowed | dropped | forgot | returned | picked up | hid | packed | wrapped up | brought | "
    "sold | gave away | posted | cleaned | fetched | put away | moved | replaced"
)

_PLACING_VERBS: Final = _words("found | left | dropped | hid | put | noticed | spotted | kept | put down | forgot")

_ACTIVITIES: Final = _words(
    "go for a walk | clean the windows | visit the museum | bake a cake | play cards | watch a film | paint the fence | "
    "fix the bike | call the plumber | cook dinner | take the dog out | wash the car | read in the garden | go swimming | "
    "tidy the cupboards | plant some tomatoes | learn a new song | write a few letters | look for a new flat | "
    "visit our grandparents | go to the market | mend the gate | sort out the attic | try the new restaurant | "
    "go fishing | ride to the lake | have a barbecue | play tennis | do the ironing | buy a new kettle | "
    "repaint the bedroom | go to the beach | stay at home | book a holiday | finish the puzzle | walk up the hill"
)

_ACTIVITIES_ING: Final = _words(
    "cleaning the garage | painting the kitchen | reading a long novel | practising the violin | "
    "looking for the car keys | sorting old photos | fixing the roof | writing emails | baking bread | learning Spanish | "
    "repairing the old clock | waiting for the bus | studying for the exam | packing for the trip | digging in the garden | "
    "ironing shirts | queuing at the post office | washing the dishes | tidying the shed | knitting a scarf | "
    "planning the party | talking on the phone | building a bookcase | watering the vegetables | walking the dog | "
    "filling in forms | searching for a parking space | shovelling snow | trying to fix the printer | peeling potatoes"
)

_HABITS: Final = _words(
    "goes swimming | walks to work | reads the newspaper | takes the early train | cooks for the whole family | "
    "plays tennis | visits the market | drinks green tea | works from home | cycles to the office | calls home | "
    "bakes bread | goes to the gym | feeds the ducks | has lunch in the park | buys fresh flowers | sings in a choir | "
    "does the crossword | jogs around the lake | helps at the library"
)

_FREQUENCIES: Final = _words(
    "on Mondays | before breakfast | after work | at the weekend | twice a week | every evening | in the summer | "
    "once a month | every morning | on rainy days | when the weather is nice | during the week"
)

_PAST_PHRASES: Final = _words(
    "won the village quiz | sold the old car | moved to a flat near the river | started a new job | ran a marathon | "
    "fell off a ladder | passed the driving test | painted the kitchen yellow | broke a window | lost the match | "
    "adopted a kitten | planted a row of beans | built a bookshelf | fixed the leaking tap | missed the last bus | "
    "found a wallet in the street | baked a huge cake | visited an old friend | climbed the hill behind the village | "
    "learned to juggle | caught a big fish | sprained an ankle | opened a small cafe | joined the chess club | "
    "bought a second-hand piano | got stuck in the lift | cut down the old pear tree | forgot the way home"
)

_SHARED_PAST: Final = _words(
    "went to the cinema | had lunch at the new cafe | played tennis in the park | cooked dinner together | "
    "walked to the lake | watched the match on television | got lost in the old town | sang at the village concert | "
    "painted the garden fence | drove to the coast | shared a taxi home | built a snowman | went to a wedding | "
    "cleaned the whole house | sat by the fire and talked"
)

_FOODS: Final = _words(
    "some cheese | a loaf of bread | a bowl of soup | some cold chicken | a piece of cake | some yoghurt | "
    "a plate of pasta | some leftover rice | a few sausages | some fruit salad | half a pizza | some ham sandwiches | "
    "a pot of stew | some boiled eggs | an apple pie"
)

_DRINKS: Final = _words(
    "a cup of tea | a glass of water | some orange juice | a hot chocolate | a coffee | a glass of milk | "
    "some lemonade | a cup of mint tea | a glass of apple juice | some sparkling water"
)

_DISHES: Final = _words(
    "vegetable soup | roast chicken | pasta with mushrooms | fish and chips | a big salad | rice and beans | pancakes | "
    "lentil curry | baked potatoes | tomato soup | a cheese omelette | beef stew | grilled fish | a vegetable pie | "
    "spaghetti | mushroom risotto"
)

_MEALS: Final = _words("lunch | dinner | supper | breakfast")

_WEATHER_BAD: Final = _words("cold | windy | wet | foggy | stormy | icy | grey | miserable")

_WEATHER_GOOD: Final = _words("sunny | warm | bright | mild | clear | lovely | dry")

_WEATHER_IF: Final = _words("rains | snows | gets too windy | is too hot | stays this cold | pours down")

_INDOORS: Final = _words("at home | inside | in bed | in the kitchen | by the fire | in the library")

_OUTDOOR: Final = _words(
    "have a picnic | go to the beach | walk along the river | eat outside | go for a bike ride | visit the gardens | "
    "play football in the park | climb the hill"
)

_ANIMALS: Final = _words(
    "dog | cat | little bird | neighbour's cat | old fox | horse | squirrel | puppy | hedgehog | rabbit | robin | kitten | "
    "duck | goat"
)

_ANIMAL_ING: Final = _words("sleeping | hiding | sitting | waiting | playing | lying | eating | resting")

_PLURAL_ANIMALS: Final = _words(
    "sheep | cows | geese | ducks | swans | horses | crows | pigeons | rabbits | deer | goats"
)

_FIELDS: Final = _words(
    "in the field by the road | on the lake | in the meadow | along the river | on the roof of the barn | "
    "near the farm | on the hill"
)

_TRANSPORT: Final = _words("by bus | by train | by bike | by car | on foot | by taxi | by tram | by ferry")

_VEHICLES: Final = _words("bus | train | ferry | coach | last train | first bus | night bus | express train | tram")

_CITIES: Final = _words(
    "the city | the coast | the airport | the capital | the seaside | the next village | Millbrook | Ashford | Riverton | "
    "Oakfield | Kingsbridge | Westport | Elmwood | Stonehill | Brookside | Fairhaven | Greenbank | Northwood"
)

_TOWNS: Final = _words(
    "the city | the capital | Millbrook | Ashford | Riverton | Oakfield | Kingsbridge | Westport | Elmwood | Stonehill | "
    "Brookside | Fairhaven | Greenbank | Northwood | a small village | the countryside"
)

_DELAYS: Final = _words(
    "cancelled because of the snow | late again this morning | completely full today | delayed by the storm | "
    "ten minutes early for once | replaced by a bus | stuck outside the tunnel"
)

_STREETS: Final = _words(
    "Mill Street | Station Road | the high street | Church Lane | Park Avenue | Market Square | Bridge Street | "
    "Oak Road | King Street | Queen's Road | Hill Crescent | Orchard Way | Water Lane | Victoria Street"
)

_SHOPS: Final = _words(
    "bakery | bookshop | butcher's | chemist | little cafe | hardware shop | flower shop | corner shop | bike shop | "
    "shoe shop | toy shop | fish shop | launderette | barber's | music shop"
)

_SHOP_STATES: Final = _words(
    "closed for the holidays | much busier than usual | looking for new staff | selling everything at half price | "
    "under new owners | being painted | moving to a bigger building | open late on Thursdays"
)

_EVENTS: Final = _words(
    "the concert | the school play | the meeting | the football match | the wedding | the party | the film | "
    "the lecture | the parade | the quiz night | the dance class | the job interview | the training session | "
    "the village fair | the swimming lesson | the choir rehearsal | the exam | the fireworks"
)

_APPLIANCES: Final = _words(
    "lamp | washing machine | front door | heater | clock | tap | fridge | window | doorbell | radio | kettle | oven | "
    "television | printer | light | shower | toaster | dishwasher"
)

_BROKEN: Final = _words(
    "broken | not working again | making a strange noise | stuck | leaking | still on | covered in dust | "
    "much older than it looks | far too loud | brand new"
)

_FEELINGS: Final = _words("tired | nervous | busy | sleepy | cold | upset | excited | hungry | worried")

_FEELINGS_AFTER: Final = _words(
    "tired | happy | relieved | proud | hungry | exhausted | calm | cheerful | thirsty | sore"
)

_EXPERIENCES: Final = _words(
    "the long drive | the exam | the first day at work | the match | the interview | the walk up the hill | "
    "such a short night | the swim | the flight | the dentist | the party | the bike ride"
)

_SKILLS: Final = _words(
    "swim | drive | play the guitar | knit | speak Italian | ride a bike | bake bread | dance | ski | sail | "
    "draw portraits | play chess | cook curry | type quickly | play the drums | speak Japanese"
)

_SEASONS: Final = _words(
    "this summer | this winter | this year | this autumn | this spring | at the moment | at night school"
)

_DURATIONS: Final = _words(
    "ten minutes | half an hour | two hours | three days | a whole week | an hour | most of the afternoon | all morning | "
    "forty minutes | twenty minutes | the whole evening | a couple of hours"
)

_CHORES: Final = _words(
    "lock the back door | turn off the oven | feed the cat | switch off the lights | close the windows | "
    "take out the rubbish | water the plants | pay the electricity bill | post the letter | charge your phone | buy milk | "
    "call your mother | book the tickets | unplug the iron | leave a key for the cleaner | bring in the washing"
)

_CLAUSES_PAST: Final = _words(
    "the shop was already closed | the kitchen smelled of fresh bread | the lights were still on | "
    "somebody had left the gate open | the dog was waiting by the door | it had started to snow | "
    "the house was very quiet | there was a parcel on the doorstep | the kettle had just boiled | "
    "the power had gone off | the garden was covered in leaves | the children were already asleep | "
    "the soup was still warm | the roof was leaking again | everyone had gone to bed | the film had started"
)

_REPORTS: Final = _words(
    "the train will be late | the meeting is cancelled | dinner is ready | the shop opens at nine | "
    "the road is closed | the concert starts soon | we need more milk | the tickets are on the table | "
    "the keys are in the drawer | the heating is broken | the plumber is coming on Monday | the parcel has arrived | "
    "the car needs petrol | the pool is closed today | lunch will be a bit late | the cat has been fed"
)

_SMALL_ITEMS: Final = _words(
    "gloves | wallet | umbrella | reading glasses | bus pass | scarf | house keys | notebook | watch | phone charger | "
    "library card | sunglasses | hat | earrings"
)

_PATHS: Final = _words(
    "the river | the beach | the old railway line | the canal | the edge of the forest | the main road | the cliff path | "
    "the lake shore | the valley"
)

_LANDMARKS: Final = _words(
    "a little bridge | the lighthouse | an old farm | the next village | a small waterfall | the harbour wall | "
    "a quiet cafe | a ruined chapel | the lock gates | a row of cottages"
)

_REPAIRS: Final = _words(
    "a good clean | a new coat of paint | a new carpet | new curtains | a bigger radiator | a new lock | more shelves | "
    "a new floor"
)

_DEADLINES: Final = _words(
    "the winter | the guests arrive | Christmas | the end of the month | we sell the house | the baby is born | "
    "next weekend"
)

_INSTITUTION_ROOMS: Final = _words(
    "meeting room | waiting room | classroom | staff room | music room | computer room | reading room | first aid room"
)

_ORDINALS: Final = _words("first | second | third | fourth | fifth | sixth | seventh | eighth | ninth | tenth")

_FACILITIES: Final = _words(
    "lift | stairs | kitchen | main office | fire exit | toilets | reception desk | coffee machine"
)

_TURN_POINTS: Final = _words(
    "the traffic lights | the roundabout | the church | the second corner | the petrol station | the big oak tree | "
    "the post box | the pub"
)

_DIRECTIONS_ON: Final = _words(
    "walk past the school | keep going for about a mile | take the first road on the right | follow the signs | "
    "cross the little bridge | go straight up the hill"
)

_WORKPLACES: Final = _words(
    "a small bakery | the hospital | a garage | a bookshop | the university | a hotel | a flower shop | "
    "a big supermarket | a printing company | the council office | a dental practice | a furniture factory"
)

_VOCABULARY: Final[dict[str, list[str]]] = {
    "name": _NAMES,
    "person": _NAMES + _PEOPLE,
    "relative": _RELATIVES,
    "thing": _THINGS,
    "plural_thing": _PLURAL_THINGS,
    "town_place": _TOWN_PLACES,
    "room": _ROOMS,
    "place_rel": _PLACE_REL,
    "surface": _SURFACES,
    "past_time": _PAST_TIMES,
    "future_time": _FUTURE_TIMES,
    "weekday": _WEEKDAYS,
    "past_verb": _PAST_VERBS,
    "placing_verb": _PLACING_VERBS,
    "activity": _ACTIVITIES,
    "activity_ing": _ACTIVITIES_ING,
    "habit": _HABITS,
    "frequency": _FREQUENCIES,
    "past_phrase": _PAST_PHRASES,
    "shared_past": _SHARED_PAST,
    "food": _FOODS,
    "drink": _DRINKS,
    "dish": _DISHES,
    "meal": _MEALS,
    "weather_bad": _WEATHER_BAD,
    "weather_good": _WEATHER_GOOD,
    "weather_if": _WEATHER_IF,
    "indoors": _INDOORS,
    "outdoor": _OUTDOOR,
    "animal": _ANIMALS,
    "animal_ing": _ANIMAL_ING,
    "plural_animal": _PLURAL_ANIMALS,
    "field": _FIELDS,
    "transport": _TRANSPORT,
    "vehicle": _VEHICLES,
    "city": _CITIES,
    "delay": _DELAYS,
    "street": _STREETS,
    "shop": _SHOPS,
    "shop_state": _SHOP_STATES,
    "event": _EVENTS,
    "appliance": _APPLIANCES,
    "broken": _BROKEN,
    "feeling": _FEELINGS,
    "feeling_after": _FEELINGS_AFTER,
    "experience": _EXPERIENCES,
    "skill": _SKILLS,
    "season": _SEASONS,
    "duration": _DURATIONS,
    "chore": _CHORES,
    "clause_past": _CLAUSES_PAST,
    "report": _REPORTS,
    "small_item": _SMALL_ITEMS,
    "path": _PATHS,
    "landmark": _LANDMARKS,
    "repair": _REPAIRS,
    "deadline": _DEADLINES,
    "institution_room": _INSTITUTION_ROOMS,
    "ordinal": _ORDINALS,
    "facility": _FACILITIES,
    "turn_point": _TURN_POINTS,
    "directions_on": _DIRECTIONS_ON,
    "workplace": _WORKPLACES,
    "town": _TOWNS,
    "leaving": _words("this morning | for work | for the airport | for the weekend | on holiday | the house"),
    "going": _words(
        "go to bed | leave for work | go out | go on holiday | start cooking | forget again | leave the house"
    ),
}

TEMPLATES: Final = [
    "{person} {past_verb} {thing} {past_time}.",
    "{person} {placing_verb} {thing} {place_rel}.",
    "Could you bring {thing} to {town_place} {future_time}?",
    "I think I left {thing} {place_rel}.",
    "Have you seen {thing} anywhere in the {room}?",
    "We are meeting {person} outside {town_place} {clock}.",
    "There were {num_small} {plural_thing} on {surface} {past_time}.",
    "{person} bought {num_small} {plural_thing} for {price}.",
    "The {vehicle} to {city} leaves {clock}.",
    "The {vehicle} to {city} was {delay}.",
    "It was so {weather_bad} {past_time} that we stayed {indoors}.",
    "If it {weather_if} {future_time}, we will {activity} instead.",
    "If the weather is {weather_good} {future_time}, let's {outdoor}.",
    "I think {person} will {activity} {future_time}.",
    "Did you remember to {chore} before you left {leaving}?",
    "Please {chore} before you {going}.",
    "Don't forget to {chore} {future_time}.",
    "{person} has been {activity_ing} for {duration}.",
    "{person} spent {duration} {activity_ing} {past_time}.",
    "My {relative} works at {workplace} near {town_place}.",
    "The {appliance} in the {room} is {broken}.",
    "Why is {thing} still {place_rel}?",
    "We need {num_small} more {plural_thing} for {event}.",
    "How long does it take to walk from {town_place} to {town_place}?",
    "{person} told me that {report}.",
    "Can you tell {person} that {report}?",
    "{name} usually {habit} {frequency}.",
    "The {shop} on {street} closes {clock} on {weekday}s.",
    "The {shop} on {street} is {shop_state}.",
    "The {animal} was {animal_ing} {place_rel}.",
    "My {relative} is coming to visit {future_time}.",
    "{person} will be {age} years old on {weekday}.",
    "There is {food} in the fridge if {person} is hungry.",
    "Would you like {drink} or {drink}?",
    "{event} starts {clock}, so please don't be late.",
    "{person} is learning to {skill} {season}.",
    "It takes about {num_minutes} minutes to get to {town_place} {transport}.",
    "When {name} got home {past_time}, {clause_past}.",
    "By the time {person} arrived, {clause_past}.",
    "I lost my {small_item} somewhere between {town_place} and {town_place}.",
    "We walked along {path} until we reached {landmark}.",
    "{person} made {dish} for {meal} {past_time}.",
    "We are having {dish} for {meal} on {weekday}.",
    "The {room} needs {repair} before {deadline}.",
    "How much did you pay for {thing}?",
    "{person} asked if we could {activity} {future_time}.",
    "I would rather {activity} {future_time} than {activity}.",
    "Is it true that {person} {past_phrase}?",
    "{person} {past_phrase} {past_time}.",
    "We counted {num_big} {plural_animal} {field}.",
    "The {institution_room} is on the {ordinal} floor, next to the {facility}.",
    "Our flat is {num_minutes} minutes from {town_place} {transport}.",
    "Turn left at {turn_point} and {directions_on}.",
    "Turn right after {turn_point}, then {directions_on}.",
    "The tickets for {event} cost {price} each.",
    "Room {room_number} is at the end of the corridor.",
    "My new phone number ends in {digits}.",
    "The {vehicle} leaves from platform {num_small} {clock}.",
    "{name} lives at number {house_number} {street}.",
    "We have been waiting outside {town_place} for {duration}.",
    "{person} felt {feeling_after} after {experience}.",
    "I was too {feeling} to {activity} {past_time}.",
    "What time does {event} start {future_time}?",
    "Where did you put {thing} when you came home?",
    "Who left {thing} {place_rel}?",
    "{name} and {name} {shared_past} {past_time}.",
    "You can leave {thing} with {person} if I'm not at home.",
    "Let's {activity} after {meal} on {weekday}.",
    "{name} has lived in {town} for {num_big} years.",
]

_PLACEHOLDER: Final = re.compile(r"\{([a-z_]+)\}")


def _fill(template: str, rng: random.Random) -> str:
    used: set[str] = set()

    def substitute(match: re.Match[str]) -> str:
        slot = match.group(1)

        for _ in range(20):
            if slot in _GENERATED:
                value = _GENERATED[slot](rng)
            else:
                value = rng.choice(_VOCABULARY[slot])

            # The same slot twice in a template takes two different values.
            if value not in used:
                break

        used.add(value)

        return value

    sentence = _PLACEHOLDER.sub(substitute, template)

    return sentence[0].upper() + sentence[1:]


def _word_count(sentence: str) -> int:
    return len(re.sub(r"[^a-z' ]+", " ", sentence.lower()).split())


def _repeats_a_content_word(sentence: str) -> bool:
    """Whether a word longer than four letters comes back ("the kitchen
    table in the kitchen"): such fillings are dropped."""
    words = [w for w in re.sub(r"[^a-z' ]+", " ", sentence.lower()).split() if len(w) > 4]

    return len(words) != len(set(words))


MIN_WORDS: Final = 5

MAX_WORDS: Final = 16


def generate_sentences(count: int, *, seed: int = 0, exclude: set[str] | None = None) -> list[str]:
    """Returns ``count`` distinct sentences (distinct after lower-casing and
    dropping punctuation), the same for the same ``count`` and ``seed``.
    Sentences whose normalised form is in ``exclude`` are skipped.

    The templates are taken in turn, so every structure is represented evenly
    until the template's combinations run out."""
    rng = random.Random(seed)

    seen = set(exclude or ())

    sentences: list[str] = []

    for attempt in range(count * 20):
        if len(sentences) == count:
            break

        template = TEMPLATES[attempt % len(TEMPLATES)]

        sentence = _fill(template, rng)

        if not MIN_WORDS <= _word_count(sentence) <= MAX_WORDS or _repeats_a_content_word(sentence):
            continue

        key = normalize_transcript(sentence)
        if key in seen:
            continue

        seen.add(key)

        sentences.append(sentence)

    if len(sentences) < count:
        raise ValueError(f"The grammar yields only {len(sentences)} distinct sentences, not {count}.")

    return sentences


def vocabulary_size(sentences: list[str]) -> int:
    """The number of distinct words in ``sentences`` after normalisation."""
    return len({w for s in sentences for w in normalize_transcript(s).split()})
